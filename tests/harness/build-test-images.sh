#!/usr/bin/env bash
# Build the offline test image archives that Molecule scenarios load through the roles'
# air-gapped image supply (docker_image_archives). Each archive gets a .sha256 beside it.
# Skipped when the archive was built from the same recipe.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/harness/lib.sh
. "$here/lib.sh"

out="$MMO_CACHE/images"
mkdir -p "$out"

# mmo/httpd-test:1 — busybox httpd serving a fixed page on :8080 as an unprivileged user.
# Small (about 2 MB), so loading it inside a test host takes a second.
build_httpd_test() {
  local image=mmo/httpd-test:1 archive="$out/httpd-test.tar"
  local recipe
  recipe=$( (declare -f build_httpd_test; sha256sum /bin/busybox) | sha256sum | cut -c1-16)
  if archive_up_to_date "$archive" "$recipe"; then
    log "$archive is up to date (recipe $recipe)"
    return 0
  fi
  local root
  root=$(mktemp -d)
  mkdir -p "$root/bin" "$root/www" "$root/etc"
  cp /bin/busybox "$root/bin/busybox"
  for applet in sh httpd wget cat; do ln -s busybox "$root/bin/$applet"; done
  echo 'nobody:x:65534:65534:nobody:/nonexistent:/bin/false' >"$root/etc/passwd"
  echo 'nogroup:x:65534:' >"$root/etc/group"
  echo 'multimodel offline test image' >"$root/www/index.html"
  tar -C "$root" -c . | docker import \
    --change 'USER 65534:65534' \
    --change 'EXPOSE 8080' \
    --change 'CMD ["/bin/httpd", "-f", "-p", "8080", "-h", "/www"]' \
    --change "LABEL org.multimodel.recipe=$recipe" \
    - "$image" >/dev/null
  rm -rf "$root"
  save_archive "$image" "$archive" "$recipe"
}

build_httpd_test
