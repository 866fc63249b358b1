# Copyright (c) 2026, multimodel.orchestration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The backend's WebSocket protocol from a test's side (a websockets sync client)."""

import json
from typing import Any


def ask(ws: Any, **message: Any) -> tuple[list[str], dict[str, Any]]:
    """Send one query; return (token texts, last message: done or error)."""
    ws.send(json.dumps(message))
    texts = []
    while True:
        reply = json.loads(ws.recv(timeout=30))
        if reply['type'] != 'token':
            return texts, reply
        texts.append(reply['text'])
