#!/usr/bin/env bash
# Build the ready-host images mmo/docker-host:SUITE (tests/harness/ready_hosts.yml): Docker
# Engine installed by the collection's docker role on the systemd base image. Needs the
# collection installed (make collection). Skipped when every image was built from the same
# recipe: this script, the playbook and its task files, the base images and the docker and
# common roles. Usage: build-ready-hosts.sh [SUITE...] (default: bookworm forky)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=tests/harness/lib.sh
. "$here/lib.sh"

suites=("$@")
[ ${#suites[@]} -gt 0 ] || suites=(bookworm forky)

recipe=$( (cat "$0" "$here/ready_hosts.yml" "$here"/tasks/*.yml
           for suite in "${suites[@]}"; do image_recipe "mmo/debian:$suite"; done
           find "$root/roles/docker" "$root/roles/common" -type f | sort | xargs cat) | sha256sum | cut -c1-16)

stale=()
for suite in "${suites[@]}"; do
  [ "$(image_recipe "mmo/docker-host:$suite")" = "$recipe" ] || stale+=("$suite")
done
if [ ${#stale[@]} -eq 0 ]; then
  log "mmo/docker-host:{$(IFS=,; echo "${suites[*]}")} are up to date (recipe $recipe)"
  exit 0
fi

log "building mmo/docker-host for ${stale[*]} (recipe $recipe)"
start=$SECONDS
suites_json=$(printf '"%s",' "${stale[@]}")
ANSIBLE_LOCALHOST_WARNING=false ansible-playbook "$here/ready_hosts.yml" \
  -e "{\"ready_host_suites\": [${suites_json%,}], \"ready_host_recipe\": \"$recipe\"}" >"$MMO_CACHE/ready-hosts.log" 2>&1 || {
  tail -n 60 "$MMO_CACHE/ready-hosts.log" >&2
  die "building the ready-host images failed (log: $MMO_CACHE/ready-hosts.log)"
}
log "built mmo/docker-host for ${stale[*]} in $((SECONDS - start)) s"
