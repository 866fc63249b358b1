# -*- coding: utf-8 -*-
# Copyright (c) 2026, multimodel.orchestration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Read-only calls to the Docker engine's API on its unix socket.

Standard library only, so the modules that read the engine (host_port_check, service_status)
need no Docker SDK on the target. Private to this collection: it may change in any release.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
from typing import Any, Optional
from urllib.parse import quote

DEFAULT_SOCKET = '/var/run/docker.sock'


class EngineError(RuntimeError):
    """The engine answered, but not with what was asked for."""


class _UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over the engine's unix socket (the standard library has no such connection)."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__('localhost', timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.socket_path)
        self.sock = sock


def get(docker_socket: str, path: str, timeout: float = 10) -> Optional[Any]:
    """GET ``path`` of the engine's API and return its JSON, or None when there is no engine
    to ask (no socket, or nothing answers on it). Raises EngineError for any other answer
    than 200 with JSON."""
    if not os.path.exists(docker_socket):
        return None
    connection = _UnixHTTPConnection(docker_socket, timeout)
    try:
        connection.request('GET', path)
        response = connection.getresponse()
        body = response.read()
    except OSError:
        return None
    finally:
        connection.close()
    if response.status != 200:
        raise EngineError('the Docker engine answered %s to GET %s: %s'
                          % (response.status, path, body[:300].decode('utf-8', 'replace')))
    try:
        return json.loads(body)
    except ValueError:
        raise EngineError('the Docker engine answered GET %s with a body that is not JSON' % path)


def containers(docker_socket: str, labels: Optional[list[str]] = None, all_states: bool = False,
               timeout: float = 10) -> Optional[list[dict[str, Any]]]:
    """The engine's containers (GET /containers/json: running ones, or every one with
    ``all_states``), only those with every ``labels`` item (``key`` or ``key=value``);
    None when there is no engine."""
    query = []
    if all_states:
        query.append('all=1')
    if labels:
        query.append('filters=' + quote(json.dumps({'label': list(labels)}), safe=''))
    found = get(docker_socket, '/containers/json' + ('?' + '&'.join(query) if query else ''), timeout)
    if found is not None and not isinstance(found, list):
        raise EngineError('the Docker engine answered GET /containers/json with %s, not a list' % type(found).__name__)
    return found
