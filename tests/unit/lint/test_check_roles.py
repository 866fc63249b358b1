# Copyright (c) 2026, multimodel.orchestration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""tests/lint/check_roles.py on a small repository laid out like this one."""

import importlib.util
import pathlib
import textwrap

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[3]
_spec = importlib.util.spec_from_file_location("check_roles", ROOT / "tests" / "lint" / "check_roles.py")
check_roles = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check_roles)

EXAMPLE = "# role\n\n```yaml\n- hosts: all\n```\n"


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))


def include(role, entry):
    return textwrap.dedent(f"""\
        - name: Use {role} {entry}
          ansible.builtin.include_role:
            name: multimodel.orchestration.{role}
            tasks_from: {entry}
        """)


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """svc (a role with main and an `image` entry point, its own scenario) uses lib (a task
    library with `fetch`), which no scenario applies directly."""
    monkeypatch.setattr(check_roles, "ROOT", tmp_path)
    svc = tmp_path / "roles" / "svc"
    write(svc / "defaults" / "main.yml", "---\nsvc_port: 80\n")
    specs = {"main": {"options": {"svc_port": {"description": "Port.", "type": "int", "default": 80}}},
             "image": {"options": {"svc_image": {"description": "Image.", "type": "str"}}}}
    write(svc / "meta" / "argument_specs.yml", yaml.safe_dump({"argument_specs": specs}))
    write(svc / "tasks" / "main.yml", "---\n" + include("lib", "fetch"))
    write(svc / "tasks" / "image.yml", "---\n")
    write(svc / "README.md", EXAMPLE)
    lib = tmp_path / "roles" / "lib"
    specs = {"fetch": {"options": {"lib_url": {"description": "URL.", "type": "str", "required": True}}}}
    write(lib / "meta" / "argument_specs.yml", yaml.safe_dump({"argument_specs": specs}))
    write(lib / "tasks" / "fetch.yml", "---\n")
    write(lib / "README.md", EXAMPLE)
    write(tmp_path / "playbooks" / "site.yml", "---\n- hosts: all\n  roles: [multimodel.orchestration.svc]\n")
    write(tmp_path / "molecule" / "svc" / "molecule.yml", "---\n")
    write(tmp_path / "molecule" / "svc" / "converge.yml", "---\n- hosts: all\n  roles: [multimodel.orchestration.svc]\n")
    return tmp_path


def run(capsys):
    code = check_roles.main()
    return code, capsys.readouterr().out.splitlines()


def test_a_consistent_repository_passes(repo, capsys):
    assert run(capsys) == (0, ["checked 2 roles: 0 problems"])


def test_every_tasks_from_without_an_entry_point_is_reported_in_one_run(repo, capsys):
    write(repo / "roles" / "svc" / "tasks" / "extra.yml", "---\n" + include("lib", "missing") + include("svc", "nope"))
    write(repo / "molecule" / "svc" / "prepare.yml", "---\n- hosts: all\n  tasks:\n" + textwrap.indent(include("lib", "fetch.yml"), "    "))
    code, out = run(capsys)
    assert code == 1
    assert ("roles/svc/tasks/extra.yml:5: tasks_from 'missing' of multimodel.orchestration.lib has no entry point "
            "'missing' in roles/lib/meta/argument_specs.yml") in out
    assert any(line.startswith("roles/svc/tasks/extra.yml:9: tasks_from 'nope' of multimodel.orchestration.svc")
               for line in out)
    assert any(line.startswith("molecule/svc/prepare.yml:7: tasks_from 'fetch.yml'") and "write tasks_from: fetch" in line
               for line in out)
    assert out[-1] == "checked 2 roles: 3 problems"


def test_templated_and_unknown_targets_are_reported(repo, capsys):
    write(repo / "playbooks" / "extra.yml", "---\n- hosts: all\n  tasks:\n" + textwrap.indent(
        include("lib", "'{{ which }}'") + include("ghost", "main"), "    "))
    code, out = run(capsys)
    assert code == 1
    assert any("tasks_from '{{ which }}' of multimodel.orchestration.lib is templated" in line for line in out)
    assert any("multimodel.orchestration.ghost is not a role under roles/" in line for line in out)


def test_every_entry_point_needs_its_task_file(repo, capsys):
    (repo / "roles" / "svc" / "tasks" / "image.yml").unlink()
    (repo / "roles" / "lib" / "tasks" / "fetch.yml").unlink()
    code, out = run(capsys)
    assert code == 1
    assert "svc: entry point 'image' has no tasks/image.yml" in out
    assert "lib: entry point 'fetch' has no tasks/fetch.yml" in out


def test_options_of_other_entry_points_are_described_and_typed(repo, capsys):
    specs_file = repo / "roles" / "svc" / "meta" / "argument_specs.yml"
    specs = yaml.safe_load(specs_file.read_text())
    specs["argument_specs"]["image"]["options"]["image_ref"] = {"type": "str"}
    specs_file.write_text(yaml.safe_dump(specs))
    code, out = run(capsys)
    assert code == 1
    assert "svc: option 'image_ref' of 'image' is not prefixed with 'svc_'" in out
    assert "svc: option 'image_ref' of 'image' needs a description and a type" in out


def test_an_internal_role_counts_as_tested_only_through_a_tested_role(repo, capsys):
    assert check_roles.scenarios_using("lib") == ["svc"]
    (repo / "molecule" / "svc" / "converge.yml").unlink()
    (repo / "playbooks" / "site.yml").unlink()
    (repo / "molecule" / "svc" / "molecule.yml").unlink()
    code, out = run(capsys)
    assert code == 1
    assert "svc: no Molecule scenario at molecule/svc/molecule.yml, and no scenario applies the role " \
           "or a role that uses it" in out
    assert "lib: no Molecule scenario applies a role that uses this task library" in out


def test_yaml_in_the_generated_variable_section_is_not_an_example(repo, capsys):
    write(repo / "roles" / "svc" / "README.md", "# svc\n\n<!-- BEGIN VARIABLES -->\n```yaml\nsvc_port: 80\n```\n"
          "<!-- END VARIABLES -->\n")
    code, out = run(capsys)
    assert code == 1
    assert "svc: README.md has no example playbook (a ```yaml block)" in out
