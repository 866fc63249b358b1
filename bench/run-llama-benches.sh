#!/usr/bin/env bash
# Run the model tier benchmarks on real llama-servers: converge the llama_cpp_servers
# Molecule scenario (four instances on tiny models), run bench/*.py inside the instance,
# then destroy it. Prints the tables. `make bench` calls this.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
instance=llama_cpp_servers-debian-testing
key=molecule-test-key
molecule converge -s llama_cpp_servers >/dev/null 2>&1
trap 'molecule destroy -s llama_cpp_servers >/dev/null 2>&1' EXIT
docker exec "$instance" rm -rf /opt/mmo-bench
docker exec "$instance" mkdir -p /opt/mmo-bench/bench /opt/mmo-bench/plugins/module_utils
docker cp bench/. "$instance:/opt/mmo-bench/bench/"
docker cp plugins/module_utils/llama_server.py "$instance:/opt/mmo-bench/plugins/module_utils/"
urls="http://127.0.0.1:8080 http://127.0.0.1:8081 http://127.0.0.1:8082 http://127.0.0.1:8083"
echo
docker exec "$instance" python3 /opt/mmo-bench/bench/bench_llama_startup.py --api-key "$key" --runs 5 \
  Q2_FAST_1=8080:q2-fast Q2_FAST_2=8081:q2-fast Q3_SYNTH=8082:q3-synth Q4_DEEP=8083:q4-deep
echo
# shellcheck disable=SC2086
docker exec "$instance" python3 /opt/mmo-bench/bench/bench_model_health.py --api-key "$key" --runs 20 $urls
