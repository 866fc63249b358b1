# Shared helpers for the harness scripts (sourced, not executed).
# shellcheck shell=bash

log() { printf '[harness %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Where built artifacts (image archives, models) live between runs.
MMO_CACHE=${MMO_CACHE:-/var/cache/mmo-harness}
export MMO_CACHE

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

# An image archive in $MMO_CACHE/images is ARCHIVE with ARCHIVE.sha256 (what the roles'
# docker_image_archives check) and ARCHIVE.recipe (the recipe it was built from) beside it.

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
