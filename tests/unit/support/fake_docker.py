# Copyright (c) 2026, multimodel.orchestration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A Docker engine API on a unix socket that answers GET /containers/json as the engine does
(running containers, or every one with all=1; filters={"label": [...]}), from a list of
entries in the engine's own JSON shape."""

from __future__ import annotations

import http.server
import json
import socketserver
import threading
from urllib.parse import parse_qs, urlsplit


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def _has_labels(entry, labels):
    present = entry.get('Labels') or {}
    for label in labels:
        key, sep, value = label.partition('=')
        if key not in present or (sep and present[key] != value):
            return False
    return True


class FakeDockerEngine:
    """containers: the engine's entries; status: the HTTP status to answer with;
    requests: the paths asked for."""

    def __init__(self, path: str) -> None:
        self.path, self.containers, self.status, self.requests = path, [], 200, []
        engine = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (the standard library's name)
                engine.requests.append(self.path)
                url = urlsplit(self.path)
                query = parse_qs(url.query)
                labels = json.loads(query['filters'][0]).get('label', []) if 'filters' in query else []
                found = [entry for entry in engine.containers
                         if (query.get('all') == ['1'] or entry.get('State') == 'running') and _has_labels(entry, labels)]
                body = json.dumps(found if engine.status == 200 else {'message': 'engine error'}).encode()
                self.send_response(engine.status if url.path == '/containers/json' else 404)
                self.send_header('Content-Type', 'application/json')
                self.send_header('Content-Length', str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self._server = _Server(path, Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
