#!/usr/bin/env python
"""Check every role's contract files agree with each other.

For each role under roles/:
- meta/argument_specs.yml documents exactly the keys of defaults/main.yml (no more, no
  fewer), with the same default values, and every option has a description and a type;
- README.md exists and shows an example playbook (outside the generated variable tables);
- every entry point of meta/argument_specs.yml has its task file (tasks/ENTRY.yml);
- a Molecule scenario named after the role exists under molecule/, or (an internal role) a
  scenario applies it, directly or through a role that includes it (by FQCN, with
  include_role/import_role or as a meta dependency), itself applied by a scenario.

Across the repository (roles/, playbooks/, molecule/, tests/harness/, tests/integration/,
site.yml): every `tasks_from: ENTRY` of a `multimodel.orchestration.<role>` names an entry
point of that role's meta/argument_specs.yml, so Ansible validates the arguments of every
task file another role or playbook calls.

Exits 1 listing every problem found, so one run shows them all.
"""
import pathlib
import re
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
COLLECTION = "multimodel.orchestration"
# Where task files and playbooks that call the collection's roles live.
REFERENCE_PATHS = ("roles", "playbooks", "molecule", "tests/harness", "tests/integration", "site.yml")
# The README's variable tables, written by tests/lint/role_docs.py (their YAML blocks are not examples).
GENERATED_SECTION = re.compile(r"<!-- BEGIN VARIABLES.*?<!-- END VARIABLES[^\n]*", re.S)


def load_yaml(path):
    return yaml.safe_load(path.read_text()) if path.exists() else None


def load_specs(role):
    return ((load_yaml(role / "meta" / "argument_specs.yml") or {}).get("argument_specs") or {})


def scenarios_applying(role_name):
    """Scenarios whose playbooks apply the role by FQCN, directly or through the
    collection's site playbook."""
    fqcn = f"{COLLECTION}.{role_name}"
    site = ROOT / "playbooks" / "site.yml"
    in_site = site.exists() and fqcn in site.read_text()
    found = set()
    for playbook in (ROOT / "molecule").glob("*/*.yml"):
        if playbook.name == "molecule.yml":
            continue
        text = playbook.read_text()
        if fqcn in text or (in_site and f"{COLLECTION}.site" in text):
            found.add(playbook.parent.name)
    return found


def _role_names(node, found):
    """Values of `name` and `role` keys naming one of the collection's roles, under a node."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("name", "role") and isinstance(value, str) and value.startswith(COLLECTION + "."):
                found.add(value[len(COLLECTION) + 1:])
            else:
                _role_names(value, found)
    elif isinstance(node, list):
        for item in node:
            if isinstance(item, str) and item.startswith(COLLECTION + "."):
                found.add(item[len(COLLECTION) + 1:])  # a meta dependency written as a string
            else:
                _role_names(item, found)


def roles_used_by(role):
    """The collection's roles this role includes or imports (tasks, handlers) or depends on
    (meta/main.yml), by FQCN."""
    used = set()
    files = [p for sub in ("tasks", "handlers") for p in sorted((role / sub).rglob("*.y*ml"))]
    for path in files:
        try:
            _role_names(load_yaml(path), used)
        except yaml.YAMLError:
            continue  # yamllint names it
    _role_names((load_yaml(role / "meta" / "main.yml") or {}).get("dependencies") or [], used)
    used.discard(role.name)
    return used


def scenarios_using(role_name, _seen=frozenset()):
    """Scenarios that exercise the role: they apply it, or apply a role that uses it (an
    internal role is tested through the roles built on it)."""
    seen = _seen | {role_name}
    found = scenarios_applying(role_name)
    for user in sorted(p for p in (ROOT / "roles").iterdir() if p.is_dir() and p.name not in seen):
        if role_name in roles_used_by(user):
            found |= set(scenarios_using(user.name, seen))
    return sorted(found)


def entry_point_files(role, specs):
    """Every argument_specs entry point needs the task file Ansible runs for it."""
    return [f"{role.name}: entry point '{entry}' has no tasks/{entry}.yml"
            for entry in sorted(specs)
            if not any((role / "tasks" / f"{entry}{ext}").is_file() for ext in (".yml", ".yaml", ""))]


def entry_point_options(role, specs):
    """Options of the entry points other than main: prefixed, described, typed."""
    problems = []
    name = role.name
    for entry, spec in sorted(specs.items()):
        for key, option in sorted(((spec or {}).get("options") or {}).items()):
            if not key.startswith(name + "_"):
                problems.append(f"{name}: option '{key}' of '{entry}' is not prefixed with '{name}_'")
            if not (option or {}).get("description") or not (option or {}).get("type"):
                problems.append(f"{name}: option '{key}' of '{entry}' needs a description and a type")
    return problems


def has_example(readme):
    return readme.exists() and "```yaml" in GENERATED_SECTION.sub("", readme.read_text())


def _tasks_from_calls(node, found):
    """(line, role, entry) of every mapping with a `tasks_from` and a collection role's FQCN
    as `name` (include_role, import_role) under a YAML node."""
    if isinstance(node, yaml.MappingNode):
        keys = {key.value: value for key, value in node.value if isinstance(key, yaml.ScalarNode)}
        target, entry = keys.get("name"), keys.get("tasks_from")
        if (isinstance(target, yaml.ScalarNode) and isinstance(entry, yaml.ScalarNode)
                and str(target.value).startswith(COLLECTION + ".")):
            found.append((entry.start_mark.line + 1, target.value[len(COLLECTION) + 1:], str(entry.value)))
        for _key, value in node.value:
            _tasks_from_calls(value, found)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _tasks_from_calls(item, found)


def tasks_from_calls():
    """(path, line, role, entry) of every `tasks_from` call of a collection role."""
    files = []
    for name in REFERENCE_PATHS:
        path = ROOT / name
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.suffix in (".yml", ".yaml") and p.is_file())
    calls = []
    for path in files:
        found = []
        try:
            for document in yaml.compose_all(path.read_text()):
                _tasks_from_calls(document, found)
        except yaml.YAMLError:
            continue  # not YAML Ansible could read either; yamllint names it
        calls += [(path, line, role, entry) for line, role, entry in found]
    return calls


def check_tasks_from():
    """Every tasks_from call names an entry point of the called role's argument_specs."""
    problems = []
    for path, line, role_name, entry in tasks_from_calls():
        where = f"{path.relative_to(ROOT)}:{line}"
        role = ROOT / "roles" / role_name
        if "{{" in entry or "{%" in entry:
            problems.append(f"{where}: tasks_from '{entry}' of {COLLECTION}.{role_name} is templated; "
                            "name the entry point literally so its argument spec can be checked")
        elif not role.is_dir():
            problems.append(f"{where}: {COLLECTION}.{role_name} is not a role under roles/")
        elif entry not in load_specs(role):
            hint = ""
            if entry.endswith((".yml", ".yaml")):
                hint = (f" (Ansible looks the spec up under the exact tasks_from value; "
                        f"write tasks_from: {entry.rsplit('.', 1)[0]})")
            problems.append(f"{where}: tasks_from '{entry}' of {COLLECTION}.{role_name} has no entry point "
                            f"'{entry}' in roles/{role_name}/meta/argument_specs.yml{hint}")
    return problems


def check_role(role):
    problems = []
    name = role.name
    defaults_file = role / "defaults" / "main.yml"
    specs_file = role / "meta" / "argument_specs.yml"
    defaults = yaml.safe_load(defaults_file.read_text()) if defaults_file.exists() else {}
    defaults = defaults or {}
    if not specs_file.exists():
        return [f"{name}: meta/argument_specs.yml is missing"]
    specs = load_specs(role)
    if "main" not in specs:
        # A task library (include_role + tasks_from): one entry point per task file, each
        # validating its own arguments; it is tested through the roles that use it.
        return check_library(role, specs)
    options = (specs.get("main") or {}).get("options", {}) or {}

    for key in sorted(set(defaults) - set(options)):
        problems.append(f"{name}: '{key}' is in defaults/main.yml but not in meta/argument_specs.yml")
    for key in sorted(set(options) - set(defaults)):
        if not options[key].get("required"):
            problems.append(f"{name}: '{key}' is in meta/argument_specs.yml but not in defaults/main.yml "
                            "(add a default or mark it required)")
    for key, spec in sorted(options.items()):
        if not spec.get("description"):
            problems.append(f"{name}: option '{key}' has no description")
        if not spec.get("type"):
            problems.append(f"{name}: option '{key}' has no type")
        templated = isinstance(defaults.get(key), str) and "{{" in defaults[key]
        if templated:
            # Argument spec defaults are templated at validation time, before facts exist:
            # a templated default is described in words instead (no braces: specs are templated too).
            if "default" in spec:
                problems.append(f"{name}: '{key}' has a templated default: drop it from argument_specs "
                                "and describe it in the description")
            elif "Default:" not in " ".join(spec.get("description") or []):
                problems.append(f"{name}: the description of '{key}' must say its templated default ('Default: ...')")
        elif key in defaults and "default" in spec and spec["default"] != defaults[key]:
            problems.append(f"{name}: default of '{key}' differs: defaults/main.yml has {defaults[key]!r}, "
                            f"argument_specs has {spec['default']!r}")
        elif key in defaults and "default" not in spec and not spec.get("required"):
            problems.append(f"{name}: option '{key}' has no default in meta/argument_specs.yml")
        bad_prefix = not key.startswith(name + "_")
        if bad_prefix:
            problems.append(f"{name}: option '{key}' is not prefixed with '{name}_'")

    problems += entry_point_files(role, specs)
    problems += entry_point_options(role, {e: s for e, s in specs.items() if e != "main"})
    readme = role / "README.md"
    if not readme.exists():
        problems.append(f"{name}: README.md is missing")
    elif not has_example(readme):
        problems.append(f"{name}: README.md has no example playbook (a ```yaml block)")
    if not (ROOT / "molecule" / name / "molecule.yml").exists() and not scenarios_using(name):
        problems.append(f"{name}: no Molecule scenario at molecule/{name}/molecule.yml, "
                        "and no scenario applies the role or a role that uses it")
    return problems


def check_library(role, specs):
    problems = []
    name = role.name
    if (role / "defaults" / "main.yml").exists():
        problems.append(f"{name}: a task library has no defaults/main.yml (defaults go in its entry points)")
    problems += entry_point_files(role, specs)
    problems += entry_point_options(role, specs)
    readme = role / "README.md"
    if not has_example(readme):
        problems.append(f"{name}: README.md with an example (a ```yaml block) is missing")
    # A library is tested through the roles that use it: one of them must be in a scenario.
    if not scenarios_using(name):
        problems.append(f"{name}: no Molecule scenario applies a role that uses this task library")
    return problems


def main():
    # A directory is a role once it has tasks or metadata (files alone may be work in progress).
    roles = sorted(p for p in (ROOT / "roles").iterdir()
                   if p.is_dir() and ((p / "tasks").is_dir() or (p / "meta").is_dir()))
    problems = [p for role in roles for p in check_role(role)] + check_tasks_from()
    for problem in problems:
        print(problem)
    print(f"checked {len(roles)} roles: {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
