#!/usr/bin/env bash
# Build the offline monitoring test images (issue 12) from Debian testing's packages, the
# stand-ins for the official images no registry here serves: one debootstrap of Debian testing
# with prometheus, prometheus-alertmanager and prometheus-redis-exporter, then one small image
# per component holding only its binaries, the libraries they link and busybox (sh, wget for
# the health checks), laid out like the official image. Each is saved to
# $MMO_CACHE/images/NAME.tar with a .sha256 (and a .recipe) beside it, loaded by the roles'
# air-gapped image supply (docker_image_archives); skipped when built from the same recipe.
#   mmo/prometheus-test:3      like prom/prometheus (/bin/prometheus, /bin/promtool, nobody)
#   mmo/alertmanager-test:1    like prom/alertmanager (/bin/alertmanager, /bin/amtool, nobody,
#                              and the package's templates, which Alertmanager loads at start)
#   mmo/redis-exporter-test:1  like oliver006/redis_exporter (/redis_exporter, uid 59000)
set -euo pipefail
suite=${MMO_MONITORING_IMAGE_SUITE:-forky}
packages=prometheus,prometheus-alertmanager,prometheus-redis-exporter,busybox-static

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/harness/lib.sh
. "$here/lib.sh"
out="$MMO_CACHE/images"
mkdir -p "$out"

# name|image|user|binaries (source=target,...)|dirs owned by user|entrypoint|cmd|workdir|port|
# directories of the package copied as they are
specs=(
  "prometheus-test|mmo/prometheus-test:3|65534:65534|/usr/bin/prometheus=/bin/prometheus,/usr/bin/promtool=/bin/promtool|/etc/prometheus,/prometheus|[\"/bin/prometheus\"]|[\"--config.file=/etc/prometheus/prometheus.yml\", \"--storage.tsdb.path=/prometheus\"]|/prometheus|9090"
  "alertmanager-test|mmo/alertmanager-test:1|65534:65534|/usr/bin/prometheus-alertmanager=/bin/alertmanager,/usr/bin/amtool=/bin/amtool|/etc/alertmanager,/alertmanager|[\"/bin/alertmanager\"]|[\"--config.file=/etc/alertmanager/alertmanager.yml\", \"--storage.path=/alertmanager\"]|/alertmanager|9093|/usr/share/prometheus/alertmanager"
  "redis-exporter-test|mmo/redis-exporter-test:1|59000:59000|/usr/bin/prometheus-redis-exporter=/redis_exporter||[\"/redis_exporter\"]|[]|/|9121"
)

# copy_with_libs SRC DEST IMAGE_ROOT: a binary of the rootfs and every library it links.
copy_with_libs() {
  local src=$1 dest=$2 root=$3 lib
  install -D -m 0755 "$rootfs$src" "$root$dest"
  for lib in $(chroot "$rootfs" ldd "$src" 2>/dev/null | grep -o '/[^ ]*' || true); do
    [ -e "$rootfs$lib" ] || continue
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$rootfs$lib" "$root$lib"
  done
}

recipe=$( (declare -f; echo "$suite $packages"; printf '%s\n' "${specs[@]}") | sha256sum | cut -c1-16)
todo=()
for spec in "${specs[@]}"; do
  name=${spec%%|*}
  if archive_up_to_date "$out/$name.tar" "$recipe"; then
    log "$out/$name.tar is up to date (recipe $recipe)"
  else
    todo+=("$spec")
  fi
done
[ ${#todo[@]} -gt 0 ] || exit 0

work=$(mktemp -d /var/tmp/mmo-monitoring.XXXXXX)
trap 'rm -rf "$work"' EXIT
rootfs="$work/rootfs"
script=$(debootstrap_script "$suite")
# One root filesystem for the three images (the script argument only where the suite needs one).
log "debootstrap $suite with $packages"
debootstrap --variant=minbase --include="$packages" "$suite" "$rootfs" http://deb.debian.org/debian \
    ${script:+"$script"} >"$work/debootstrap.log" 2>&1 \
  || { tail -n 30 "$work/debootstrap.log" >&2; die "debootstrap $suite ($packages) failed"; }

for spec in "${todo[@]}"; do
  IFS='|' read -r name image user binaries dirs entrypoint cmd workdir port copies <<<"$spec"
  root="$work/$name"
  mkdir -p "$root"/{bin,etc,tmp}
  chmod 1777 "$root/tmp"
  cp "$rootfs/bin/busybox" "$root/bin/busybox"
  for applet in sh wget cat kill; do ln -s busybox "$root/bin/$applet"; done
  IFS=',' read -r -a pairs <<<"$binaries"
  for pair in "${pairs[@]}"; do
    copy_with_libs "${pair%%=*}" "${pair#*=}" "$root"
  done
  uid=${user%%:*}
  gid=${user##*:}
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
  if [ "$uid" != 65534 ]; then
    echo "exporter:x:$uid:$gid:exporter:/nonexistent:/bin/false" >>"$root/etc/passwd"
    echo "exporter:x:$gid:" >>"$root/etc/group"
  fi
  echo 'hosts: files dns' >"$root/etc/nsswitch.conf"
  if [ -n "$copies" ]; then
    IFS=',' read -r -a copied <<<"$copies"
    for dir in "${copied[@]}"; do
      [ -d "$rootfs$dir" ] || die "$dir is not in the $suite packages"
      mkdir -p "$root$(dirname "$dir")"
      cp -a "$rootfs$dir" "$root$dir"
    done
  fi
  if [ -n "$dirs" ]; then
    IFS=',' read -r -a owned <<<"$dirs"
    for dir in "${owned[@]}"; do install -d -o "$uid" -g "$gid" -m 0755 "$root$dir"; done
  fi
  tar --numeric-owner -C "$root" -c . | docker import \
    --change "USER $user" --change "WORKDIR $workdir" --change "EXPOSE $port" \
    --change "ENTRYPOINT $entrypoint" --change "CMD $cmd" \
    --change "LABEL org.multimodel.recipe=$recipe" - "$image" >/dev/null
  save_archive "$image" "$out/$name.tar" "$recipe"
done
