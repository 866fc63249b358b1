#!/usr/bin/env bash
# Build the offline images the app-tier Molecule scenarios run, from Debian packages, into
# archives that the scenarios load through the roles' air-gapped image supply
# (docker_image_archives), exactly as operators load the official images on air-gapped hosts.
# Each archive gets a .sha256 (and a .recipe) beside it; skipped when the archive was built
# from the same recipe.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/harness/lib.sh
. "$here/lib.sh"

out="$MMO_CACHE/images"
mkdir -p "$out"
# The Debian release the images are built from (Debian 12: Redis 7.0).
suite=${MMO_APP_IMAGE_SUITE:-bookworm}

scratch=()
cleanup() { [ ${#scratch[@]} -eq 0 ] || rm -rf "${scratch[@]}"; }
trap cleanup EXIT

# archive_up_to_date ARCHIVE RECIPE: the archive, its checksum and its recipe are all there.
archive_up_to_date() {
  [ -f "$1" ] && [ -f "$1.sha256" ] && [ "$(cat "$1.recipe" 2>/dev/null)" = "$2" ]
}

# save_archive IMAGE ARCHIVE RECIPE: docker save to a temporary name first (a half-written
# archive never looks complete), then the checksum and the recipe.
save_archive() {
  local image=$1 archive=$2 recipe=$3
  rm -f "$archive.recipe"
  docker save "$image" -o "$archive.tmp"
  mv "$archive.tmp" "$archive"
  sha256sum "$archive" | cut -d' ' -f1 >"$archive.sha256.tmp"
  mv "$archive.sha256.tmp" "$archive.sha256"
  echo "$recipe" >"$archive.recipe"
  log "built $archive ($(du -h "$archive" | cut -f1), recipe $recipe)"
}

# trim_rootfs DIR: drop what a service container never reads (docs, locales, apt state, logs).
trim_rootfs() {
  local root=$1
  rm -rf "$root"/usr/share/{doc,man,info,locale,lintian,linda,common-licenses,bash-completion,zsh} \
         "$root"/var/cache/apt/* "$root"/var/cache/debconf/*-old "$root"/var/lib/apt/lists/* \
         "$root"/var/log/* "$root"/tmp/* "$root"/root/.cache
  mkdir -p "$root"/usr/share/locale
}

# mmo/redis-test:7 - Debian's redis-server laid out like the official Alpine image, so the role
# runs it with its production defaults: redis user 999:1000, /data owned by it as the working
# directory, redis-server and redis-cli on PATH, /bin/sh for the health check, CMD redis-server.
build_redis_test() {
  local image=mmo/redis-test:7 archive="$out/redis-test.tar"
  local recipe
  recipe=$( (declare -f build_redis_test trim_rootfs save_archive; echo "$suite redis-server") | sha256sum | cut -c1-16)
  if archive_up_to_date "$archive" "$recipe"; then
    log "$archive is up to date (recipe $recipe)"
    return 0
  fi
  local rootfs start=$SECONDS
  rootfs=$(mktemp -d "/var/tmp/mmo-rootfs-redis.XXXXXX")
  scratch+=("$rootfs" "$rootfs.log" "$archive.tmp")
  log "debootstrap $suite with redis-server into $rootfs"
  if ! debootstrap --variant=minbase --include=redis-server "$suite" "$rootfs" \
        http://deb.debian.org/debian >"$rootfs.log" 2>&1; then
    tail -n 30 "$rootfs.log" >&2
    die "debootstrap $suite (redis-server) failed"
  fi

  # Give the redis user and group the official image's ids, and everything they own with them.
  local old_uid old_gid
  old_uid=$(awk -F: '$1 == "redis" {print $3}' "$rootfs/etc/passwd")
  old_gid=$(awk -F: '$1 == "redis" {print $3}' "$rootfs/etc/group")
  if [ -z "$old_uid" ] || [ -z "$old_gid" ]; then
    die "the redis-server package created no redis user"
  fi
  if [ "$old_uid" != 999 ] || [ "$old_gid" != 1000 ]; then
    if awk -F: '$1 != "redis" && $3 == 999 {found = 1} END {exit !found}' "$rootfs/etc/passwd"; then
      die "uid 999 is taken in the $suite rootfs"
    fi
    if awk -F: '$1 != "redis" && $3 == 1000 {found = 1} END {exit !found}' "$rootfs/etc/group"; then
      die "gid 1000 is taken in the $suite rootfs"
    fi
    sed -i "s/^redis:x:$old_uid:$old_gid:/redis:x:999:1000:/" "$rootfs/etc/passwd"
    sed -i "s/^redis:x:$old_gid:/redis:x:1000:/" "$rootfs/etc/group"
    find "$rootfs" -xdev -uid "$old_uid" -exec chown -h 999 {} +
    find "$rootfs" -xdev -gid "$old_gid" -exec chgrp -h 1000 {} +
  fi
  install -d -o 999 -g 1000 -m 0750 "$rootfs/data"
  trim_rootfs "$rootfs"

  tar --numeric-owner -C "$rootfs" -c . | docker import \
    --change 'USER 999:1000' \
    --change 'WORKDIR /data' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'EXPOSE 6379' \
    --change 'CMD ["redis-server"]' \
    --change "LABEL org.multimodel.recipe=$recipe" \
    - "$image" >/dev/null
  save_archive "$image" "$archive" "$recipe"
  log "$image took $((SECONDS - start)) s"
}

build_redis_test
