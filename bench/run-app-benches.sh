#!/usr/bin/env bash
# Run the app tier benchmark on the real stack: converge the app_tier Molecule scenario (the
# whole site.yml on the local inventory), run bench/bench_app_tier.py inside the instance,
# then destroy it. Prints the table. `make bench` calls this.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
instance=app_tier-debian-testing
molecule converge -s app_tier >/dev/null 2>&1
trap 'molecule destroy -s app_tier >/dev/null 2>&1' EXIT
docker cp bench/bench_app_tier.py "$instance:/usr/local/lib/mmo-bench-app-tier.py"
echo
docker exec "$instance" python3 /usr/local/lib/mmo-bench-app-tier.py --requests "${BENCH_REQUESTS:-40}" \
  --concurrency "${BENCH_CONCURRENCY:-4}"
