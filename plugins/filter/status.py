# -*- coding: utf-8 -*-
# Copyright (c) 2026, multimodel.orchestration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The tables the playbooks print: the stack's status (service_status rows from every host,
health.yml) and the problems preflight found (preflight.yml)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ansible.errors import AnsibleFilterError

_STATUS_COLUMNS = (("", "mark"), ("HOST", "host"), ("SERVICE", "service"), ("ADDRESS", "address"),
                   ("STATE", "state"), ("VERSION", "version"))
_PROBLEM_COLUMNS = (("HOST", "host"), ("ROLE", "role"), ("CHECK", "check"), ("PROBLEM", "problem"))


def _rows(name: str, rows: Any, required: tuple[str, ...]) -> list[dict[str, Any]]:
    if not isinstance(rows, list) or not all(isinstance(row, Mapping) for row in rows):
        raise AnsibleFilterError("%s: expects a list of dicts, got %r" % (name, rows))
    for row in rows:
        missing = [key for key in required if key not in row]
        if missing:
            raise AnsibleFilterError("%s: every row needs %s, got %r" % (name, " and ".join(required), row))
    return [dict(row) for row in rows]


def _cell(value: Any) -> str:
    text = "-" if value in (None, "") else str(value)
    return " ".join(text.split())  # one line per row, whatever the value held


def _table(columns: tuple[tuple[str, str], ...], rows: list[dict[str, Any]]) -> list[str]:
    """Aligned lines: a title line, then one line per row; the last column is not padded."""
    titles, keys = [column[0] for column in columns], [column[1] for column in columns]
    cells = [titles] + [[_cell(row.get(key)) for key in keys] for row in rows]
    widths = [max(len(line[column]) for line in cells) for column in range(len(columns))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in cells]


def status_rows(rows: Any, unreachable: Any = None) -> list[dict[str, Any]]:
    """Rows sorted by host then service, with a row for each host that could not be read."""
    table = _rows("status_table", rows, ("host", "service"))
    for host in unreachable or []:
        table.append({"host": host, "service": "(host)", "address": "-", "state": "unreachable", "version": "-",
                      "healthy": False, "detail": "Ansible could not read its services (unreachable, or a task failed above)"})
    return sorted(table, key=lambda row: (str(row["host"]), str(row["service"])))


def status_table(rows: Any, unreachable: Any = None) -> list[str]:
    """Lines of a table (mark, host, service, address, state, version), a failing row marked
    FAIL, then one line per failing row saying why, and a count."""
    table = status_rows(rows, unreachable)
    for row in table:
        row["mark"] = "ok" if row.get("healthy") else "FAIL"
    lines = _table(_STATUS_COLUMNS, table)
    failing = [row for row in table if not row.get("healthy")]
    if failing:
        lines.append("")
        lines += ["FAIL %s %s: %s" % (row["host"], row["service"], _cell(row.get("detail") or row.get("state")))
                  for row in failing]
    lines.append("%d of %d services healthy" % (len(table) - len(failing), len(table)))
    return lines


def preflight_table(rows: Any) -> list[str]:
    """Lines of a table of preflight problems (host, role, check, problem), in the order found
    per host, hosts sorted, and a count."""
    table = sorted(_rows("preflight_table", rows, ("host", "role", "problem")), key=lambda row: str(row["host"]))
    hosts = sorted({str(row["host"]) for row in table})
    return _table(_PROBLEM_COLUMNS, table) + ["%d problem(s) on %d host(s)" % (len(table), len(hosts))]


class FilterModule:
    def filters(self):
        return {"status_table": status_table, "preflight_table": preflight_table}
