#!/usr/bin/env bash
# shellcheck disable=SC2317  # cleanup (EXIT traps) and customize_* (passed by name) look unreachable
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
caddy_suite=${MMO_CADDY_IMAGE_SUITE:-forky}

scratch=()
cleanup() { [ ${#scratch[@]} -eq 0 ] || rm -rf "${scratch[@]}"; }
trap cleanup EXIT

# trim_rootfs DIR: drop what a service container never reads (docs, locales, apt state, logs).
trim_rootfs() {
  local root=$1
  rm -rf "$root"/usr/share/{doc,man,info,locale,lintian,linda,common-licenses,bash-completion,zsh} \
         "$root"/var/cache/apt/* "$root"/var/cache/debconf/*-old "$root"/var/lib/apt/lists/* \
         "$root"/var/log/* "$root"/tmp/* "$root"/root/.cache
  mkdir -p "$root"/usr/share/locale
}

# debootstrap_rootfs DIR PACKAGES [SUITE]: a minimal root filesystem of SUITE (default $suite)
# with PACKAGES (comma separated) in DIR; the log goes to DIR.log.
debootstrap_rootfs() {
  local rootfs=$1 packages=$2 release=${3:-$suite} script=()
  script=("$(debootstrap_script "$release")")
  [ -n "${script[0]}" ] || script=()
  log "debootstrap $release with $packages into $rootfs"
  if ! debootstrap --variant=minbase --include="$packages" "$release" "$rootfs" \
        http://deb.debian.org/debian "${script[@]}" >"$rootfs.log" 2>&1; then
    tail -n 30 "$rootfs.log" >&2
    die "debootstrap $release ($packages) failed"
  fi
}

# build_debian_image NAME IMAGE SUITE PACKAGES CUSTOMIZE [DOCKERFILE-CHANGE...]: a minimal SUITE
# root filesystem with PACKAGES, shaped by the function CUSTOMIZE (called with the rootfs),
# trimmed and imported as IMAGE with the given changes (PATH and the recipe label are added),
# then saved to $out/NAME.tar. Skipped when the archive was built from the same recipe (these
# functions, CUSTOMIZE and the arguments).
build_debian_image() {
  local name=$1 image=$2 release=$3 packages=$4 customize=$5
  shift 5
  local archive="$out/$name.tar" recipe
  recipe=$( (declare -f build_debian_image "$customize" debootstrap_rootfs trim_rootfs save_archive
             echo "$release $packages $*") | sha256sum | cut -c1-16)
  if archive_up_to_date "$archive" "$recipe"; then
    log "$archive is up to date (recipe $recipe)"
    return 0
  fi
  local rootfs start=$SECONDS change changes=()
  rootfs=$(mktemp -d "/var/tmp/mmo-rootfs-$name.XXXXXX")
  scratch+=("$rootfs" "$rootfs.log" "$archive.tmp")
  debootstrap_rootfs "$rootfs" "$packages" "$release"
  "$customize" "$rootfs"
  trim_rootfs "$rootfs"
  for change in "$@" 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
                "LABEL org.multimodel.recipe=$recipe"; do
    changes+=(--change "$change")
  done
  tar --numeric-owner -C "$rootfs" -c . | docker import "${changes[@]}" - "$image" >/dev/null
  save_archive "$image" "$archive" "$recipe"
  log "$image took $((SECONDS - start)) s"
}

# mmo/redis-test:7 - Debian's redis-server laid out like the official Alpine image, so the role
# runs it with its production defaults: redis user 999:1000, /data owned by it as the working
# directory, redis-server and redis-cli on PATH, /bin/sh for the health check, CMD redis-server.
customize_redis() {
  local rootfs=$1
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
}
build_redis_test() {
  build_debian_image redis-test mmo/redis-test:7 "$suite" redis-server customize_redis \
    'USER 999:1000' 'WORKDIR /data' 'EXPOSE 6379' 'CMD ["redis-server"]'
}

# mmo/caddy-test:2 - Debian testing's caddy (2.11; Debian 12 and 13 ship 2.6, which cannot
# resend a request body on retry) laid out like the official caddy image: /usr/bin/caddy,
# /etc/caddy/Caddyfile, XDG_CONFIG_HOME=/config, XDG_DATA_HOME=/data, WORKDIR /srv, the same
# CMD, and wget (busybox, as in the official Alpine image) for the health check. Like the
# official image it has no user of its own: the caddy role picks the uid.
customize_caddy() {
  local rootfs=$1
  ln -sf /bin/busybox "$rootfs/usr/bin/wget"
  mkdir -p "$rootfs"/{config,data,srv,etc/caddy}
  printf ':80 {\n\trespond "caddy-test"\n}\n' >"$rootfs/etc/caddy/Caddyfile"
}
build_caddy_test() {
  build_debian_image caddy-test mmo/caddy-test:2 "$caddy_suite" caddy,ca-certificates,busybox customize_caddy \
    'ENV XDG_CONFIG_HOME=/config' 'ENV XDG_DATA_HOME=/data' 'WORKDIR /srv' 'EXPOSE 80 443 443/udp 2019' \
    'CMD ["caddy", "run", "--config", "/etc/caddy/Caddyfile", "--adapter", "caddyfile"]'
}

# mmo/python-test:3.11 - the stand-in for python:3.11-slim-bookworm that the backend role
# builds the reference backend on: Debian 12's python3 with venv (ensurepip).
customize_python() { :; }
build_python_test() {
  build_debian_image python-test mmo/python-test:3.11 "$suite" python3,python3-venv,ca-certificates \
    customize_python 'ENV LANG=C.UTF-8' 'CMD ["python3"]'
}

# mmo/searxng-test:1 - the stand-in for the official searxng image, which cannot be pulled or
# built here (SearXNG is in no reachable package index): Debian 12's searx, the project
# SearXNG forked from, with the same settings file format (use_default_settings) and the same
# JSON search API (/search?format=json) and /healthz. Laid out like the official image: the
# searxng user 977:977, settings at /etc/searxng/settings.yml, port 8080, wget for the health
# check.
customize_searxng() {
  local rootfs=$1
  ln -sf /bin/busybox "$rootfs/usr/bin/wget"
  # Debian ships searx's default settings as an example only; use_default_settings reads them
  # from the package directory, where upstream keeps them.
  cp "$rootfs/usr/share/doc/searx/examples/settings.yml" "$rootfs/usr/lib/python3/dist-packages/searx/settings.yml"
  if awk -F: '$3 == 977 {found = 1} END {exit !found}' "$rootfs/etc/passwd" "$rootfs/etc/group"; then
    die "uid or gid 977 is taken in the $suite rootfs"
  fi
  echo 'searxng:x:977:977:searxng:/nonexistent:/usr/sbin/nologin' >>"$rootfs/etc/passwd"
  echo 'searxng:x:977:' >>"$rootfs/etc/group"
  install -d -o 977 -g 977 -m 0755 "$rootfs/etc/searxng"
}
build_searxng_test() {
  # python3-cffi-backend by name: debootstrap cannot resolve the virtual package
  # python3-cryptography depends on.
  build_debian_image searxng-test mmo/searxng-test:1 "$suite" searx,busybox,python3-cffi-backend \
    customize_searxng 'USER 977:977' 'ENV SEARX_SETTINGS_PATH=/etc/searxng/settings.yml' \
    'ENV SEARXNG_SETTINGS_PATH=/etc/searxng/settings.yml' 'EXPOSE 8080' 'CMD ["python3", "-m", "searx.webapp"]'
}

# $MMO_CACHE/wheels/backend: the offline wheelhouse of the reference backend (backend_wheelhouse),
# every wheel checked against requirements.lock's sha256 pins by pip download itself.
build_backend_wheelhouse() {
  local lock="$here/../../roles/backend/files/app/requirements.lock"
  local dest="$MMO_CACHE/wheels/backend" recipe venv
  recipe=$( (declare -f build_backend_wheelhouse; cat "$lock") | sha256sum | cut -c1-16)
  if [ "$(cat "$dest/.recipe" 2>/dev/null)" = "$recipe" ]; then
    log "$dest is up to date (recipe $recipe)"
    return 0
  fi
  venv=$(mktemp -d "/var/tmp/mmo-pip.XXXXXX")
  scratch+=("$venv" "$dest.tmp")
  python3 -m venv "$venv"
  rm -rf "$dest.tmp"
  # Environment markers dropped: the wheelhouse holds what any Python the image may have needs
  # (async-timeout is only for Python < 3.11.3, Debian 12's 3.11.2 among them).
  sed -E 's/ ;[^\\]*\\$/ \\/' "$lock" >"$venv/requirements.lock"
  "$venv/bin/pip" download -q --disable-pip-version-check --require-hashes --only-binary :all: \
    --no-deps -r "$venv/requirements.lock" -d "$dest.tmp"
  echo "$recipe" >"$dest.tmp/.recipe"
  rm -rf "$dest"
  mv "$dest.tmp" "$dest"
  log "downloaded $dest ($(du -sh "$dest" | cut -f1), recipe $recipe)"
}

# Each build in its own subshell, which cleans up its own scratch files.
pids=()
( trap cleanup EXIT; build_redis_test ) &
pids+=($!)
( trap cleanup EXIT; build_caddy_test ) &
pids+=($!)
( trap cleanup EXIT; build_python_test ) &
pids+=($!)
( trap cleanup EXIT; build_searxng_test ) &
pids+=($!)
( trap cleanup EXIT; build_backend_wheelhouse ) &
pids+=($!)
status=0
for pid in "${pids[@]}"; do
  wait "$pid" || status=1
done
exit "$status"
