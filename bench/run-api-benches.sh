#!/usr/bin/env bash
# The gateway on the real stack: converge the app_tier Molecule scenario (the whole site.yml on
# the local inventory), run bench/bench_api.py from here against its instance (Redis is stopped
# and paused from the controller), then destroy it. Prints the two tables.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
molecule converge -s app_tier >/dev/null 2>&1
trap 'molecule destroy -s app_tier >/dev/null 2>&1' EXIT
echo
python bench/bench_api.py --instance app_tier-debian-testing
