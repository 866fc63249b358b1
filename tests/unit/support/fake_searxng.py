# Copyright (c) 2026, multimodel.orchestration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A canned SearXNG: /search?format=json with fixed results."""

from typing import Any

from support.servers import HTTPServer, QuietHandler, send_json


class FakeSearxng:
    """Answers every GET with the results; queries lists the paths asked for."""

    def __init__(self, results: list[dict[str, Any]]) -> None:
        self.results: list[dict[str, Any]] = results
        self.queries: list[str] = []
        fake = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server naming)
                fake.queries.append(self.path)
                send_json(self, 200, {'query': 'q', 'number_of_results': len(fake.results), 'results': fake.results},
                          content_type='application/json')

        self._server = HTTPServer(Handler)
        self.url = self._server.url

    def close(self) -> None:
        self._server.close()
