# Copyright (c) 2026, multimodel.orchestration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Metrics cardinality: every label value from a fixed set or from the configuration.

Before: the raw HTTP method was a label value, so any method token a client made up
(PURGE, XYZ1, XYZ2...) created a new series in every scrape.
"""

import re


def test_label_values_come_from_fixed_sets(stack):
    http = stack.backend.http
    for method in ('PURGE', 'XYZ1', 'XYZ2', 'GET', 'HEAD', 'OPTIONS'):
        http.request(method, '/health')
    http.request('BREW', '/any/path/at/all')
    http.post('/api/query', json={'query': 'hi', 'mode': 'simple'})
    text = http.get('/metrics').text
    series = re.findall(r'^mmo_http_requests_total\{(.*)\} ', text, re.MULTILINE)
    labels = [dict(re.findall(r'(\w+)="([^"]*)"', s)) for s in series]
    assert {lbl['method'] for lbl in labels} <= {'GET', 'POST', 'HEAD', 'OPTIONS', 'other'}
    assert {lbl['endpoint'] for lbl in labels} <= {'/health', '/api/query', '/metrics', 'unmatched'}
    assert all(re.fullmatch(r'[1-5]\d\d|other', lbl['status']) for lbl in labels)
    assert 'mmo_http_requests_total{endpoint="/health",method="other",status="405"} 3.0' in text
    assert 'mmo_http_requests_total{endpoint="unmatched",method="other",status="404"} 1.0' in text
    assert 'mmo_http_requests_total{endpoint="/health",method="GET",status="200"} 1.0' in text
    for name in ('XYZ', 'PURGE', 'BREW', '/any/path'):
        assert name not in text
