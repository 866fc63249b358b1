#!/usr/bin/env bash
# Make this machine ready to test the collection offline: Debian packages, a running
# Docker engine, systemd base images for Debian 12/13/testing and the test image archives.
# Idempotent: a second run reuses the daemon and every image built from the same recipe.
#   prepare-host.sh [all|packages|images]
# packages: the Debian packages, dockerd and the sandbox secrets (what lint, sanity and the
# unit tests need); images: the image builds, which `make test` runs beside those checks.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/harness/lib.sh
. "$here/lib.sh"

DISTROS=${MMO_DISTROS:-"bookworm trixie forky"}

install_host_packages() {
  local missing=()
  local pkg
  # prometheus: its promtool checks and unit-tests the alert rules (tests/unit/monitoring);
  # chromium: the browser the app_tier scenario's browser test drives (tests/browser).
  for pkg in docker.io debootstrap make python3-venv ca-certificates xz-utils busybox-static shellcheck git redis-server \
      prometheus chromium; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  # npm installs the browser test's playwright-core (make browser); any Node.js 20+ will do.
  command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing host packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

# On a hybrid cgroup host (v1 controllers, systemd's unified tree at /sys/fs/cgroup/unified),
# a controller no v1 hierarchy holds shows up in the unified tree (hugetlb, on some kernels).
# The forky test hosts see that tree as their /sys/fs/cgroup (cgroupns=host), and the Docker
# engine inside them enables every controller it finds up their cgroup path: once it has done
# so in a host container's own cgroup (it can when no process is there, as at a boot with no
# `docker exec` running), that cgroup may hold no process, so every `docker exec` into the host
# fails with "device or resource busy" (seen after test_host_restart's restart). Each such
# controller is switched off wherever it was enabled (deepest first) and given a v1 hierarchy
# of its own, so the unified tree has none, as the test hosts expect.
bind_stray_cgroup_controllers() {
  local unified=/sys/fs/cgroup/unified controller controllers=()
  [ -r "$unified/cgroup.controllers" ] || return 0
  read -ra controllers <"$unified/cgroup.controllers" || true  # empty: nothing to do
  for controller in "${controllers[@]}"; do
    log "binding the cgroup controller $controller to a v1 hierarchy (it was in the unified tree)"
    # (grep finds none on a fresh host: not an error)
    { find "$unified" -name cgroup.subtree_control -exec grep -lw "$controller" {} + || true; } \
      | awk '{ print gsub("/", "/"), $0 }' | sort -rn | cut -d' ' -f2- \
      | while read -r control; do echo "-$controller" >"$control"; done
    mount -o remount,rw /sys/fs/cgroup
    mkdir -p "/sys/fs/cgroup/$controller"
    mount -t cgroup -o "$controller" cgroup "/sys/fs/cgroup/$controller"
    mount -o remount,ro /sys/fs/cgroup
  done
}

start_dockerd() {
  if docker info >/dev/null 2>&1; then
    return 0
  fi
  log "starting dockerd"
  mkdir -p /var/log
  # No systemd on this host: run the daemon in the background, detached from this shell.
  # It outlives this script, so it gets none of the caller's other open files: a lock taken
  # by `flock FILE make host` would otherwise stay held for as long as dockerd runs.
  (
    for fd in "/proc/$BASHPID/fd/"*; do
      fd=${fd##*/}
      if [ "$fd" -gt 2 ] && [ "$fd" -lt 255 ]; then eval "exec $fd>&-"; fi
    done
    exec setsid nohup dockerd >/var/log/dockerd.log 2>&1 </dev/null
  ) &
  local _
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && return 0
    sleep 1
  done
  tail -n 30 /var/log/dockerd.log >&2
  die "dockerd did not answer within 60 s"
}

# The local sandbox's secrets (inventories/local: redis_password, searxng_secret_key,
# llama_api_key, the model servers' API key, which they need as they bind 0.0.0.0,
# backend_api_key, the key clients send to the site's /api, /v1 and /ws, grafana_admin_password
# and backups_restic_password), random, made once.
make_sandbox_secrets() {
  local dir="$MMO_CACHE/secrets" name
  install -d -m 0700 "$dir"
  for name in redis_password searxng_secret_key llama_api_key backend_api_key grafana_admin_password \
      backups_restic_password; do
    if [ ! -s "$dir/$name" ]; then
      (umask 077; head -c 24 /dev/urandom | base64 | tr -d '/+=' >"$dir/$name.tmp")
      mv "$dir/$name.tmp" "$dir/$name"
      log "generated the sandbox's $name in $dir"
    fi
  done
}

build_images() {
  local pids=() distro pid status=0
  for distro in $DISTROS; do
    "$here/build-base-image.sh" "$distro" &
    pids+=($!)
  done
  "$here/build-test-images.sh" &
  pids+=($!)
  "$here/build-app-images.sh" &
  pids+=($!)
  "$here/build-monitoring-images.sh" &
  pids+=($!)
  for pid in "${pids[@]}"; do
    wait "$pid" || status=1
  done
  [ "$status" -eq 0 ] || die "building an image failed (see above)"
  log "host ready: $(docker images --format '{{.Repository}}:{{.Tag}}' 'mmo/*' | sort | tr '\n' ' ')"
}

case "${1:-all}" in
  all) install_host_packages; bind_stray_cgroup_controllers; start_dockerd; make_sandbox_secrets; build_images ;;
  packages) install_host_packages; bind_stray_cgroup_controllers; start_dockerd; make_sandbox_secrets ;;
  images) start_dockerd; build_images ;;
  *) die "usage: prepare-host.sh [all|packages|images], not '$1'" ;;
esac
