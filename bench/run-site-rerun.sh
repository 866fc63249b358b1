#!/usr/bin/env bash
# site.yml on one host: the cold converge (a fresh app_tier Molecule instance, the whole
# site.yml on the local inventory), then warm re-runs with nothing to change, what an operator
# pays on every run and what every idempotence step pays, under each strategy and interpreter
# setting; then destroys it. Prints the table: seconds, tasks run (ok + skipped), changes, and
# the seconds of the preflight play, the biggest share of a warm run. `make bench` calls this.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export MOLECULE_PROJECT_DIRECTORY=$PWD MOLECULE_SCENARIO_DIRECTORY=$PWD/molecule/app_tier
trap 'molecule destroy -s app_tier >/dev/null 2>&1' EXIT
molecule destroy -s app_tier >/dev/null 2>&1
molecule create -s app_tier >/dev/null 2>&1
molecule prepare -s app_tier >/dev/null 2>&1
inventory=$(find "$HOME/.ansible/tmp" -maxdepth 2 -path "*.app_tier/inventory" -print -quit)
export MOLECULE_EPHEMERAL_DIRECTORY=${inventory%/inventory}

# row LABEL LOG SECONDS: a table row from a run's log (profile_tasks' timestamps give the
# preflight play's share: from its first task to the first task of the next play).
row() {
  local label=$1 log=$2 seconds=$3 recap preflight
  recap=$(grep -E '^app_tier-debian-testing +: ok=' "$log" | tail -n 1)
  preflight=$(awk '/^PLAY \[/ {play=$0; n++} /[0-9]:[0-9][0-9]:[0-9][0-9]\.[0-9]+ \*/ {
                 match($0, /[0-9]+:[0-9][0-9]:[0-9][0-9]\.[0-9]+ \*/); split(substr($0, RSTART, RLENGTH - 2), t, ":")
                 s = t[1] * 3600 + t[2] * 60 + t[3]; if (n == 1 && !a) a = s; if (n == 2 && !b) b = s }
               END {printf "%.1f", b - a}' "$log")
  printf '| %-50s | %7.1f | %9s | %5s | %7s |\n' "$label" "$seconds" "$preflight" \
    "$(sed -E 's/.* ok=([0-9]+).*skipped=([0-9]+).*/\1+\2/' <<<"$recap" | bc)" \
    "$(sed -E 's/.*changed=([0-9]+).*/\1/' <<<"$recap")"
}

# run LABEL STRATEGY INTERPRETER: one site.yml run on the instance; prints its row.
run() {
  local label=$1 strategy=$2 interpreter=$3 log start
  log=$(mktemp)
  start=$(date +%s.%N)
  ANSIBLE_STRATEGY=$strategy ANSIBLE_NOCOLOR=1 ansible-playbook -i "$inventory" \
    -e "ansible_python_interpreter=$interpreter" molecule/app_tier/converge.yml >"$log" 2>&1 \
    || { tail -n 40 "$log" >&2; exit 1; }
  row "$label" "$log" "$(echo "$(date +%s.%N) - $start" | bc)"
  rm -f "$log"
}

echo
echo "| site.yml on one host (app_tier instance)           | seconds | preflight | tasks | changed |"
echo "| -------------------------------------------------- | ------- | --------- | ----- | ------- |"
run "cold converge, mitogen_linear, /usr/bin/python3" mitogen_linear /usr/bin/python3
run "warm re-run, linear, /usr/bin/python3" linear /usr/bin/python3
run "warm re-run, mitogen_linear, interpreter auto" mitogen_linear auto_silent
run "warm re-run, mitogen_linear, /usr/bin/python3" mitogen_linear /usr/bin/python3
