#!/usr/bin/env bash
# Warm re-run of site.yml with nothing to change: what an operator pays on every run and what
# every idempotence step pays. Converges the app_tier Molecule scenario (the whole site.yml on
# the local inventory), then times re-runs of it under each strategy and interpreter setting,
# then destroys it. Prints the table. `make bench` calls this.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
molecule converge -s app_tier >/dev/null 2>&1
trap 'molecule destroy -s app_tier >/dev/null 2>&1' EXIT
inventory=$(find "$HOME/.ansible/tmp" -maxdepth 2 -path "*.app_tier/inventory" -print -quit)
export MOLECULE_PROJECT_DIRECTORY=$PWD MOLECULE_SCENARIO_DIRECTORY=$PWD/molecule/app_tier
export MOLECULE_EPHEMERAL_DIRECTORY=${inventory%/inventory}

# rerun LABEL STRATEGY INTERPRETER: one warm run; prints a table row.
rerun() {
  local label=$1 strategy=$2 interpreter=$3 log start seconds recap
  log=$(mktemp)
  start=$(date +%s.%N)
  ANSIBLE_STRATEGY=$strategy ansible-playbook -i "$inventory" -e "ansible_python_interpreter=$interpreter" \
    molecule/app_tier/converge.yml >"$log" 2>&1 || { tail -n 40 "$log" >&2; exit 1; }
  seconds=$(echo "$(date +%s.%N) - $start" | bc)
  recap=$(grep -E '^app_tier-debian-testing +: ok=' "$log" | tail -n 1)
  printf '| %-44s | %7.1f | %5s | %7s |\n' "$label" "$seconds" \
    "$(sed -E 's/.* ok=([0-9]+).*skipped=([0-9]+).*/\1+\2/' <<<"$recap" | bc)" \
    "$(sed -E 's/.*changed=([0-9]+).*/\1/' <<<"$recap")"
  rm -f "$log"
}

echo
echo "| warm site.yml re-run (app_tier instance)     | seconds | tasks | changed |"
echo "| -------------------------------------------- | ------- | ----- | ------- |"
rerun "linear, interpreter /usr/bin/python3" linear /usr/bin/python3
rerun "mitogen_linear, interpreter discovered" mitogen_linear auto_silent
rerun "mitogen_linear, interpreter /usr/bin/python3" mitogen_linear /usr/bin/python3
