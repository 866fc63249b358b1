#!/usr/bin/env bash
# Faults and deploys under load on the real stack: converge the app_tier Molecule scenario
# (the whole site.yml on the local inventory), run bench/bench_faults.py from here against
# its instance (site.yml runs and docker restarts come from the controller), then destroy it.
# Prints the two tables.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
molecule converge -s app_tier >/dev/null 2>&1
trap 'molecule destroy -s app_tier >/dev/null 2>&1' EXIT
inventory=$(find "$HOME/.ansible/tmp" -maxdepth 2 -path "*.app_tier/inventory" -print -quit)
echo
python bench/bench_faults.py --instance app_tier-debian-testing --inventory "$inventory"
