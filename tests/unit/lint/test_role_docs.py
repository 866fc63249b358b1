# Copyright (c) 2026, multimodel.orchestration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""tests/lint/role_docs.py: the README variable tables rendered from meta/argument_specs.yml."""

import importlib.util
import pathlib
import textwrap

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[3]
_spec = importlib.util.spec_from_file_location("role_docs", ROOT / "tests" / "lint" / "role_docs.py")
role_docs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(role_docs)

SPECS = yaml.safe_load(textwrap.dedent("""\
    argument_specs:
      extra:
        short_description: A second entry point
        options:
          demo_only:
            description: Used by the extra entry point.
            type: bool
            default: false
      main:
        short_description: Demo role
        options:
          demo_mode:
            description: How it runs, see I(demo_items).
            type: str
            choices: [fast, safe]
            default: safe
          demo_token:
            description: [A token., Keep it in C(ansible-vault).]
            type: str
            required: true
          demo_items:
            description: The items.
            type: list
            elements: dict
            default: []
            options:
              name:
                description: Item name.
                type: str
                required: true
          demo_limits:
            description: Limits.
            type: dict
            default: {cpu: 1}
            options:
              cpu:
                description: CPUs.
                type: int
          demo_hosts:
            description: Many hosts.
            type: list
            elements: str
            default: [alpha.example.internal, beta.example.internal, gamma.example.internal]
    """))["argument_specs"]


def make_role(tmp_path, name="demo", specs=None, readme="# demo\n\nProse.\n\n```yaml\n- hosts: all\n```\n"):
    role = tmp_path / name
    (role / "meta").mkdir(parents=True)
    (role / "meta" / "argument_specs.yml").write_text(yaml.safe_dump({"argument_specs": specs or SPECS}))
    if readme is not None:
        (role / "README.md").write_text(readme)
    return role


def test_markup_becomes_markdown():
    assert role_docs.markup("Set I(x) to C(a|b)") == "Set `x` to `a\\|b`"
    assert role_docs.markup("C(model 'q2' (used by Q2_FAST_1)) here") == "`model 'q2' (used by Q2_FAST_1)` here"
    assert role_docs.markup("B(bold), U(https://x.example), L(docs,https://d.example)") == (
        "**bold**, https://x.example, [docs](https://d.example)")
    assert role_docs.markup("a <placeholder> | b") == "a &lt;placeholder> \\| b"
    assert role_docs.markup("unclosed C(oops") == "unclosed C(oops"


@pytest.mark.parametrize("value, shown", [
    ("", '`""`'), ("0644", "`0644`"), (True, "`true`"), (None, "`null`"), (3, "`3`"),
    ([], "`[]`"), ({"a": 1}, "`{a: 1}`"), (["x", "y"], "`[x, y]`"),
])
def test_inline_defaults_read_as_yaml(value, shown):
    assert role_docs.inline_default(value) == shown


def test_section_has_markers_entry_points_main_first_and_every_field():
    section = role_docs.render_section(SPECS)
    lines = section.splitlines()
    assert lines[0] == role_docs.BEGIN and lines[-1] == role_docs.END
    assert section.index("### `main`: Demo role") < section.index("### `extra`: A second entry point")
    assert "`tasks_from: extra`" in section
    assert "| `demo_mode` | str |  | `safe` | `fast`, `safe` | How it runs, see `demo_items`. |" in lines
    assert "| `demo_token` | str | yes |  |  | A token. Keep it in `ansible-vault`. |" in lines
    assert "| `demo_items` | list of dict |  | `[]` |  | The items. |" in lines
    assert "| `demo_items[].name` | str | yes |  |  | Item name. |" in lines
    assert "| `demo_limits.cpu` | int |  |  |  | CPUs. |" in lines
    assert "| `demo_only` | bool |  | `false` |  | Used by the extra entry point. |" in lines


def test_long_default_goes_in_a_yaml_block_under_the_table():
    section = role_docs.render_section(SPECS)
    assert "| `demo_hosts` | list of str |  | see below |  | Many hosts. |" in section.splitlines()
    block = section.split("Default of `demo_hosts`:\n\n```yaml\n", 1)[1].split("```", 1)[0]
    assert yaml.safe_load(block) == {"demo_hosts": SPECS["main"]["options"]["demo_hosts"]["default"]}


def test_entry_point_without_options():
    section = role_docs.render_section({"main": {"short_description": "Nothing to set"}})
    assert "No variables." in section and "| Variable |" not in section


def test_an_entry_point_with_mains_variables_refers_to_its_table():
    specs = dict(SPECS, status={"short_description": "Read it", "options": SPECS["main"]["options"]})
    section = role_docs.render_section(specs)
    status = section.split("### `status`", 1)[1]
    assert "`tasks_from: status`" in status and "The variables of `main`." in status
    assert "| Variable |" not in status
    assert section.count("| `demo_mode` |") == 1


def test_section_is_appended_once_then_replaced_in_place():
    readme = "# demo\n\nProse.\n"
    first = role_docs.replace_section(readme, "<!-- BEGIN VARIABLES x -->\nold\n<!-- END VARIABLES -->\n")
    assert first.startswith("# demo\n\nProse.\n\n<!-- BEGIN")
    edited = first + "\n## Later prose\n"
    second = role_docs.replace_section(edited, role_docs.render_section(SPECS))
    assert "old" not in second and second.endswith("<!-- END VARIABLES -->\n\n## Later prose\n")
    assert second.startswith("# demo\n\nProse.\n\n")
    assert role_docs.replace_section(second, role_docs.render_section(SPECS)) == second


@pytest.mark.parametrize("readme", [
    "<!-- BEGIN VARIABLES -->\n<!-- BEGIN VARIABLES -->\n<!-- END VARIABLES -->\n",
    "<!-- END VARIABLES -->\n<!-- BEGIN VARIABLES -->\n",
    "<!-- BEGIN VARIABLES -->\nno end\n",
])
def test_broken_markers_are_refused(readme):
    with pytest.raises(role_docs.MarkerError):
        role_docs.replace_section(readme, role_docs.render_section(SPECS))


def test_check_names_every_stale_readme_and_write_fixes_them(tmp_path, capsys):
    one = make_role(tmp_path, "one")
    two = make_role(tmp_path, "two")
    assert role_docs.main(["--check", str(one), str(two)]) == 1
    out = capsys.readouterr().out
    assert "one/README.md: no generated variable section" in out
    assert "two/README.md: no generated variable section" in out

    assert role_docs.main(["--write", str(one), str(two)]) == 0
    text = (one / "README.md").read_text()
    assert text.startswith("# demo\n\nProse.\n\n```yaml\n- hosts: all\n```\n\n" + role_docs.BEGIN)
    assert role_docs.main(["--write", str(one), str(two)]) == 0  # idempotent: nothing to write
    assert "written" not in capsys.readouterr().out.split("\n", 2)[-1]
    assert (one / "README.md").read_text() == text
    assert role_docs.main(["--check", str(one), str(two)]) == 0

    specs = dict(SPECS, main=dict(SPECS["main"], short_description="Renamed"))
    (two / "meta" / "argument_specs.yml").write_text(yaml.safe_dump({"argument_specs": specs}))
    capsys.readouterr()
    assert role_docs.main(["--check", str(one), str(two)]) == 1
    out = capsys.readouterr().out
    assert "two/README.md: variable tables are stale" in out and "one/README.md" not in out


def test_prose_edits_outside_the_markers_are_not_stale(tmp_path):
    role = make_role(tmp_path)
    assert role_docs.main(["--write", str(role)]) == 0
    readme = role / "README.md"
    readme.write_text(readme.read_text().replace("Prose.", "Better prose.") + "\n## Testing\n\nMore.\n")
    assert role_docs.main(["--check", str(role)]) == 0


def test_bad_specs_and_missing_readme_are_reported_not_fatal(tmp_path, capsys):
    broken = make_role(tmp_path, "broken")
    (broken / "meta" / "argument_specs.yml").write_text("argument_specs: {main: [\n")
    fresh = make_role(tmp_path, "fresh", readme=None)
    assert role_docs.main(["--check", str(broken), str(fresh)]) == 1
    out = capsys.readouterr().out
    assert "broken/meta/argument_specs.yml: not rendered" in out
    assert "fresh/README.md: no generated variable section" in out


def test_repository_readmes_are_generated_by_this_script():
    """Every role of the collection has the section (its freshness is `make lint`'s job)."""
    for role in role_docs.roles_in(ROOT / "roles"):
        assert role_docs.BEGIN in (role / "README.md").read_text(), role.name
