#!/usr/bin/env bash
# The README's "from this checkout" commands, run exactly as a new user would:
#
#   make collection
#   . .venv/bin/activate
#   ansible-playbook -i inventories/<env> site.yml
#
# `make lint` runs this after its `collection` prerequisite. To be a fresh checkout, it copies
# the repository's files (tracked and untracked, not ignored: no .venv, no leftovers) into a
# temporary directory with the build/collections that `make collection` just installed, and
# runs ansible-playbook there with a clean environment: only PATH (the venv's bin first, as
# activating it does) and an empty HOME, so no ANSIBLE_* variable from the Makefile and no
# collection installed under ~/.ansible helps. It checks the playbook parses (--syntax-check)
# and resolves every role of the stack (--list-tasks).
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
inventory=inventories/example

if [[ ! -d build/collections/ansible_collections/multimodel/orchestration ]]; then
  echo "build/collections has no multimodel.orchestration: run make collection first" >&2
  exit 1
fi

checkout=$(mktemp -d)
trap 'rm -rf "$checkout"' EXIT
files=()
while IFS= read -r -d '' file; do
  [[ -e $file || -L $file ]] && files+=("$file")  # not one deleted but not yet committed
done < <(git ls-files -co --exclude-standard -z)
cp -P --parents -t "$checkout" "${files[@]}"
mkdir -p "$checkout/build" "$checkout/home"
cp -a build/collections "$checkout/build/"
cd "$checkout"

as_new_user() {
  env -i HOME="$checkout/home" PATH="$repo/.venv/bin:/usr/local/bin:/usr/bin:/bin" "$@"
}

as_new_user ansible-playbook -i "$inventory" site.yml --syntax-check
tasks=$(as_new_user ansible-playbook -i "$inventory" site.yml --list-tasks)

missing=()
for role in docker llama_cpp_servers redis searxng backend caddy; do
  grep -q "multimodel.orchestration.$role : " <<<"$tasks" || missing+=("$role")
done
if (( ${#missing[@]} )); then
  printf '%s\n' "$tasks"
  echo "ansible-playbook -i $inventory site.yml --list-tasks lists no task of: ${missing[*]}" >&2
  exit 1
fi
echo "checkout run: ansible-playbook -i $inventory site.yml parses and lists every role's tasks from a clean environment"
