# Shared helpers for the harness scripts (sourced, not executed).
# shellcheck shell=bash

log() { printf '[harness %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Where built artifacts (image archives, models) live between runs.
MMO_CACHE=${MMO_CACHE:-/var/cache/mmo-harness}
export MMO_CACHE

# recipe_hash FILE...: a short hash of the files that define an artifact, so an artifact is
# rebuilt exactly when its recipe changes.
recipe_hash() { cat "$@" | sha256sum | cut -c1-16; }

# image_recipe IMAGE: the recipe label of a local image, empty when the image is missing.
image_recipe() {
  docker image inspect --format '{{ index .Config.Labels "org.multimodel.recipe" }}' "$1" 2>/dev/null || true
}

# debootstrap_script SUITE: the script argument debootstrap needs for SUITE (none, or sid's for
# Debian testing, which this debootstrap has no script for); fails for an unknown suite.
debootstrap_script() {
  case "$1" in
    bookworm|trixie) ;;
    forky) echo /usr/share/debootstrap/scripts/sid ;;
    *) die "unknown suite '$1': use bookworm, trixie or forky" ;;
  esac
}
