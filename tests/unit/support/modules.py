# Copyright (c) 2026, multimodel.orchestration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Running a module's main() in a unit test, as Ansible runs it: module args in, the JSON it
prints and its exit code out."""

from __future__ import annotations

import json
from typing import Any, Callable

import pytest

from ansible.module_utils.testing import patch_module_args


def run_main(capsys: Any, main: Callable[[], None], args: dict[str, Any]) -> tuple[int, dict[str, Any], str]:
    """Run main() with args; return (exit code, parsed JSON, raw stdout)."""
    with patch_module_args(args):
        with pytest.raises(SystemExit) as info:
            main()
    out = capsys.readouterr().out
    return info.value.code, json.loads(out), out
