#!/usr/bin/env bash
# playbooks/rolling_update.yml under load, on the quick start's sandbox (`make up` first): the
# stack client's load (HTTP queries on every tier and WebSocket streams, through Caddy,
# molecule/app_tier/tests/stack_client.py) runs for a while, then during a rolling update that restarts every model
# instance and replaces every backend replica (a changed stop timeout and cache TTL), then the
# sandbox is put back as inventories/local has it. Prints the latencies before and during, and
# the failed queries (for a stream: failed, or cut before its end). Asserts nothing. Run it after `make up`: bash bench/run-rolling-update.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
sandbox=mmo-sandbox
before_s=${BENCH_BEFORE_SECONDS:-20}
docker inspect "$sandbox" >/dev/null 2>&1 || { echo "no sandbox: run make up first" >&2; exit 1; }
docker cp molecule/app_tier/tests/stack_client.py "$sandbox:/usr/local/lib/mmo-stack-client.py"
stop=/tmp/mmo-bench-load-stop
out=$(mktemp)
log=$(mktemp)
trap 'rm -f "$out" "$log"' EXIT
docker exec "$sandbox" rm -f "$stop"
spec='{"http": ["simple", "moderate", "complex", "simple"], "ws": ["simple", "moderate"], "max_tokens": 64,
       "timeout": 90, "pause": 0.2,
       "max_seconds": 900, "stop_file": "'"$stop"'"}'
docker exec "$sandbox" python3 /usr/local/lib/mmo-stack-client.py load "$spec" >"$out" &
load=$!
sleep "$before_s"
start=$(date +%s.%N)
ansible-playbook -i inventories/local playbooks/rolling_update.yml \
  -e llama_cpp_servers_stop_timeout=25 -e backend_cache_ttl=1800 >"$log" 2>&1 || { tail -n 40 "$log" >&2; }
end=$(date +%s.%N)
sleep 3
docker exec "$sandbox" touch "$stop"
wait "$load"
# Back to the inventory's settings (restarts everything once more, not measured).
ansible-playbook -i inventories/local playbooks/rolling_update.yml >/dev/null 2>&1 || echo "restoring the sandbox failed" >&2

python3 - "$out" "$start" "$end" "$before_s" <<'EOF'
import json, statistics, sys
result, start, end, before = json.load(open(sys.argv[1])), float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
def row(label, chosen):
    ok = sorted(q[2] - q[1] for q in chosen if q[3] == "ok")
    failed = sum(1 for q in chosen if q[3] != "ok")
    p99 = ok[min(len(ok) - 1, int(len(ok) * 0.99))] if ok else float("nan")
    print(f"| {label:<27} | {len(ok):>10} | {failed:>6} | {statistics.median(ok) if ok else float('nan'):>5.2f} "
          f"| {p99:>5.2f} | {ok[-1] if ok else float('nan'):>5.2f} |")
print("\nrolling_update.yml under load (4 HTTP query loops on every tier, 2 WebSocket stream loops, through Caddy)\n")
print("| window                      | queries ok | failed | p50 s | p99 s | max s |")
print("| --------------------------- | ---------- | ------ | ----- | ----- | ----- |")
for kind in ("http", "ws"):
    queries = [q for q in result["queries"] if q[0] == kind]
    row(f"{kind}, before ({before} s)", [q for q in queries if q[2] < start])
    row(f"{kind}, during ({end - start:.0f} s)", [q for q in queries if q[1] <= end and q[2] >= start])
if result["reconnects"]:
    print("\nWebSocket handshakes opened again:", len(result["reconnects"]))
if result["errors"]:
    print("\nfirst errors:", *result["errors"][:5], sep="\n  ")
EOF
