# Copyright (c) 2026, multimodel.orchestration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""`make help` lists every target of the Makefile with its `##` note."""

import pathlib
import re
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]
MAKEFILE = (ROOT / "Makefile").read_text()
# Rule lines of named targets (not variables, not the venv stamp file rule).
TARGETS = re.findall(r"^([a-z][a-z-]*):(?!=)", MAKEFILE, re.M)


def test_every_target_has_a_note():
    rules = re.findall(r"^([a-z][a-z-]*):(?!=)(.*)$", MAKEFILE, re.M)
    assert rules
    missing = [name for name, rest in rules if not re.search(r"## \S", rest)]
    assert not missing, f"targets without a '## note': {missing}"


def test_every_phony_target_is_a_rule():
    phony = re.search(r"^\.PHONY:(.*)$", MAKEFILE, re.M).group(1).split()
    assert sorted(phony) == sorted(TARGETS)


@pytest.mark.skipif(not shutil.which("make"), reason="needs make")
def test_make_help_lists_every_target_with_its_note():
    out = subprocess.run(["make", "--no-print-directory", "help"], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    listed = dict(re.findall(r"^  (\S+) +(.+)$", out, re.M))
    notes = dict(re.findall(r"^([a-z][a-z-]*):(?!=).*?## (.+)$", MAKEFILE, re.M))
    assert listed == notes
