#!/usr/bin/env bash
# Build mmo/debian:SUITE, a Debian image that boots systemd as PID 1, from debootstrap.
# Skipped when an image built from the same recipe (this file + suite) already exists.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/harness/lib.sh
. "$here/lib.sh"

suite=${1:?usage: build-base-image.sh SUITE (bookworm, trixie or forky)}
image="mmo/debian:$suite"
packages=python3,python3-apt,systemd,systemd-sysv,sudo,ca-certificates,iproute2,procps,curl,gnupg
recipe=$( (cat "$0"; echo "$suite $packages") | sha256sum | cut -c1-16)

if [ "$(image_recipe "$image")" = "$recipe" ]; then
  log "$image is up to date (recipe $recipe)"
  exit 0
fi

script=()
script_path=$(debootstrap_script "$suite")
[ -z "$script_path" ] || script=("$script_path")

rootfs=$(mktemp -d "/var/tmp/mmo-rootfs-$suite.XXXXXX")
trap 'rm -rf "$rootfs"' EXIT
log "debootstrap $suite into $rootfs"
start=$SECONDS
if ! debootstrap --variant=minbase --include="$packages" "$suite" "$rootfs" \
      http://deb.debian.org/debian "${script[@]}" >"$rootfs.log" 2>&1; then
  tail -n 30 "$rootfs.log" >&2
  die "debootstrap $suite failed"
fi
rm -f "$rootfs.log"

# Debian testing's Release file can be past its Valid-Until on the mirror.
echo 'Acquire::Check-Valid-Until "false";' >"$rootfs/etc/apt/apt.conf.d/99mmo-no-valid-until"
# Keep test images small and installs quick.
printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' \
  >"$rootfs/etc/apt/apt.conf.d/99mmo-no-recommends"
# Units that make no sense in a container and slow or degrade the boot.
for unit in getty@tty1.service console-getty.service systemd-udevd.service \
            systemd-udev-trigger.service systemd-modules-load.service \
            sys-kernel-config.mount sys-kernel-debug.mount sys-kernel-tracing.mount \
            systemd-remount-fs.service; do
  ln -sf /dev/null "$rootfs/etc/systemd/system/$unit"
done
: >"$rootfs/etc/machine-id"
apt_lists="$rootfs/var/lib/apt/lists"
find "$apt_lists" -maxdepth 1 -type f ! -name lock -delete 2>/dev/null || true
# An empty, old package index: apt's cache_valid_time sees it as stale and updates it.
touch -d @0 "$apt_lists"
rm -rf "$rootfs/var/cache/apt/archives/"*.deb

tar -C "$rootfs" -c . | docker import \
  --change 'CMD ["/lib/systemd/systemd"]' \
  --change "LABEL org.multimodel.recipe=$recipe" \
  - "$image" >/dev/null
log "built $image in $((SECONDS - start)) s (recipe $recipe)"
