#!/usr/bin/env python
"""Check every role's contract files agree with each other.

For each role under roles/:
- meta/argument_specs.yml documents exactly the keys of defaults/main.yml (no more, no
  fewer), with the same default values, and every option has a description and a type;
- README.md exists and shows an example playbook;
- a Molecule scenario named after the role exists under molecule/, or (for an internal
  role) a scenario applies it.

Exits 1 listing every problem found, so one run shows them all.
"""
import pathlib
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]


def scenarios_using(role_name):
    """Scenarios whose playbooks apply the role by FQCN (an internal role may be tested
    through the roles built on it), directly or through the collection's site playbook."""
    fqcn = f"multimodel.orchestration.{role_name}"
    in_site = fqcn in (ROOT / "playbooks" / "site.yml").read_text()
    found = set()
    for playbook in (ROOT / "molecule").glob("*/*.yml"):
        if playbook.name == "molecule.yml":
            continue
        text = playbook.read_text()
        if fqcn in text or (in_site and "multimodel.orchestration.site" in text):
            found.add(playbook.parent.name)
    return sorted(found)


def check_role(role):
    problems = []
    name = role.name
    defaults_file = role / "defaults" / "main.yml"
    specs_file = role / "meta" / "argument_specs.yml"
    defaults = yaml.safe_load(defaults_file.read_text()) if defaults_file.exists() else {}
    defaults = defaults or {}
    if not specs_file.exists():
        return [f"{name}: meta/argument_specs.yml is missing"]
    specs = (yaml.safe_load(specs_file.read_text()) or {}).get("argument_specs", {}) or {}
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

    readme = role / "README.md"
    if not readme.exists():
        problems.append(f"{name}: README.md is missing")
    elif "```yaml" not in readme.read_text():
        problems.append(f"{name}: README.md has no example playbook (a ```yaml block)")
    if not (ROOT / "molecule" / name / "molecule.yml").exists() and not scenarios_using(name):
        problems.append(f"{name}: no Molecule scenario at molecule/{name}/molecule.yml, "
                        "and no scenario applies the role")
    return problems


def check_library(role, specs):
    problems = []
    name = role.name
    if (role / "defaults" / "main.yml").exists():
        problems.append(f"{name}: a task library has no defaults/main.yml (defaults go in its entry points)")
    for entry, spec in sorted(specs.items()):
        if not (role / "tasks" / f"{entry}.yml").exists():
            problems.append(f"{name}: entry point '{entry}' has no tasks/{entry}.yml")
        for key, option in sorted(((spec or {}).get("options") or {}).items()):
            if not key.startswith(name + "_"):
                problems.append(f"{name}: option '{key}' of '{entry}' is not prefixed with '{name}_'")
            if not option.get("description") or not option.get("type"):
                problems.append(f"{name}: option '{key}' of '{entry}' needs a description and a type")
    readme = role / "README.md"
    if not readme.exists() or "```yaml" not in readme.read_text():
        problems.append(f"{name}: README.md with an example (a ```yaml block) is missing")
    return problems


def main():
    # A directory is a role once it has tasks or metadata (files alone may be work in progress).
    roles = sorted(p for p in (ROOT / "roles").iterdir()
                   if p.is_dir() and ((p / "tasks").is_dir() or (p / "meta").is_dir()))
    problems = [p for role in roles for p in check_role(role)]
    for problem in problems:
        print(problem)
    print(f"checked {len(roles)} roles: {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
