# -*- coding: utf-8 -*-
# Copyright (c) 2026, multimodel.orchestration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Writing values into systemd unit files.

A command line in ``ExecStart=`` is split by systemd itself (systemd.service(5), "Command
lines"): words are separated by spaces, ``%`` starts a specifier, ``$`` an environment
variable, and a backslash an escape. Each argument is written as one double-quoted word, so
an argument with spaces, quotes, ``%`` or ``$`` reaches the process exactly as given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ansible.errors import AnsibleFilterError

# Inside double quotes systemd reads C escapes; these four are the characters that need one
# (or a doubling) to stay literal.
_ESCAPES = {"\\": "\\\\", '"': '\\"', "%": "%%", "$": "$$"}


def _bad_character(text: str) -> str | None:
    """The first character a unit file line cannot carry as itself (control characters,
    newline and tab included), or None."""
    for char in text:
        if ord(char) < 0x20 or ord(char) == 0x7F:
            return char
    return None


def systemd_quote(value: Any) -> str:
    """One argument as a double-quoted word of a systemd command line."""
    if isinstance(value, bool) or value is None or (isinstance(value, (Mapping, Sequence)) and not isinstance(value, str)):
        raise AnsibleFilterError(
            f"systemd_quote: an argument must be a string or a number, got {type(value).__name__}: {value!r}")
    text = str(value)
    bad = _bad_character(text)
    if bad is not None:
        raise AnsibleFilterError(
            f"systemd_quote: the argument {text!r} contains the control character {bad!r} "
            f"(U+{ord(bad):04X}), which a systemd command line cannot pass; remove it")
    return '"' + "".join(_ESCAPES.get(char, char) for char in text) + '"'


def systemd_exec_args(args: Any) -> str:
    """A list of arguments (the program first) as the value of ``ExecStart=``: every
    argument double-quoted with systemd's escapes, so each reaches the process intact."""
    if isinstance(args, (str, bytes, Mapping)) or not isinstance(args, Sequence):
        raise AnsibleFilterError(
            f"systemd_exec_args: expected a list of arguments, got {type(args).__name__}: {args!r}")
    if not args:
        raise AnsibleFilterError("systemd_exec_args: the list of arguments is empty; it needs at least the program")
    return " ".join(systemd_quote(arg) for arg in args)


def systemd_unquotable(args: Any) -> list:
    """The items of ``args`` that systemd_quote refuses (control characters, lists,
    mappings, booleans, nulls); ``[args]`` when ``args`` is not a list at all. Empty when
    every item can be passed: what a preflight check asserts."""
    if isinstance(args, (str, bytes, Mapping)) or not isinstance(args, Sequence):
        return [args]
    bad = []
    for arg in args:
        try:
            systemd_quote(arg)
        except AnsibleFilterError:
            bad.append(arg)
    return bad


def systemd_show(output: Any) -> dict[str, dict[str, str]]:
    """The output of ``systemctl show -p Id -p ... UNIT...`` (one block of KEY=VALUE lines per
    unit, blocks separated by an empty line) as {Id: {KEY: VALUE}}; every block needs its Id."""
    if not isinstance(output, str):
        raise AnsibleFilterError(f"systemd_show: expected the text systemctl show printed, got {type(output).__name__}")
    units = {}
    for block in output.replace("\r\n", "\n").split("\n\n"):
        props = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        if not props:
            continue
        if "Id" not in props:
            raise AnsibleFilterError(f"systemd_show: a unit's block has no Id= (show it with -p Id): {block!r}")
        units[props["Id"]] = props
    return units


class FilterModule:
    """systemd filters of multimodel.orchestration."""

    def filters(self):
        return {
            "systemd_exec_args": systemd_exec_args,
            "systemd_quote": systemd_quote,
            "systemd_show": systemd_show,
            "systemd_unquotable": systemd_unquotable,
        }
