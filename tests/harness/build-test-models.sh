#!/usr/bin/env bash
# Build the tiny real GGUF test models tiny-1..4 into $MMO_CACHE/models (skipping those that
# exist). Each is reproducible byte for byte from its seed, so their sha256 can be pinned
# (inventories/local pins tiny-1..3). Usage: build-test-models.sh [PYTHON]
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/harness/lib.sh
. "$here/lib.sh"

python=${1:-$here/../../.venv/bin/python}
out="$MMO_CACHE/models"
mkdir -p "$out"
for seed in 1 2 3 4; do
  model="$out/tiny-$seed.gguf"
  [ -f "$model" ] && continue
  # A name of this process's own: scenarios prepared side by side may build the same model.
  "$python" "$here/../fixtures/build_tiny_gguf.py" "$model.tmp.$$" --seed "$seed" --name "tiny-$seed"
  mv "$model.tmp.$$" "$model"
  log "built $model"
done
