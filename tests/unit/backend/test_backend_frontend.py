# Copyright (c) 2026, multimodel.orchestration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The static frontend: self-contained, and its app.js works against the real backend."""

import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
FRONTEND = os.path.join(HERE, '..', '..', '..', 'roles', 'caddy', 'files', 'frontend')
NODE = shutil.which('node') or shutil.which('nodejs')


class Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs, self.options, self.ids, self.scripts_inline = [], [], set(), 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.ids.add(attrs.get('id'))
        for key in ('src', 'href'):
            if key in attrs:
                self.refs.append(attrs[key])
        if tag == 'option':
            self.options.append(attrs.get('value'))
        if tag == 'script' and 'src' not in attrs:
            self.scripts_inline += 1


def test_page_is_self_contained():
    assert sorted(os.listdir(FRONTEND)) == ['app.js', 'index.html', 'style.css']
    page = Page()
    with open(os.path.join(FRONTEND, 'index.html'), encoding='utf-8') as handle:
        page.feed(handle.read())
    assert sorted(page.refs) == ['app.js', 'style.css']  # relative, no CDN (air-gapped)
    assert page.scripts_inline == 0  # works under a strict Content-Security-Policy
    assert page.options == ['auto', 'simple', 'moderate', 'complex']
    assert {'input', 'mode', 'retrieval', 'stream', 'log', 'prompt'} <= page.ids
    for name in os.listdir(FRONTEND):
        with open(os.path.join(FRONTEND, name), encoding='utf-8') as handle:
            text = handle.read()
        assert not re.search(r'(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/', text, re.I), name  # no external asset
        assert '@import' not in text and '.innerHTML' not in text


needs_node = pytest.mark.skipif(not NODE, reason='node is not installed (only the browser-side checks need it)')


@needs_node
def test_app_js_parses():
    subprocess.run([NODE, '--check', os.path.join(FRONTEND, 'app.js')], check=True)


def run_page(backend_url, mode, retrieval, stream, *queries):
    args = [NODE]
    if stream:
        if subprocess.run([NODE, '--experimental-websocket', '-e', ''], capture_output=True, check=False).returncode:
            pytest.skip('this node has no WebSocket client')
        args.append('--experimental-websocket')  # a global WebSocket like a browser's (node 20/21)
    result = subprocess.run(args + [os.path.join(HERE, 'frontend_harness.js'), os.path.join(FRONTEND, 'app.js'),
                                    backend_url, mode, '1' if retrieval else '0', '1' if stream else '0', *queries],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return [(line['cls'], line['text']) for line in json.loads(result.stdout)]


@needs_node
def test_page_queries_over_http(stack):
    lines = run_page(stack.backend.url, 'simple', False, False, 'What is Redis', 'What is Redis')
    assert [cls for cls, text in lines] == ['echo', 'answer', 'meta'] * 2
    assert lines[0] == ('echo', '> What is Redis')
    assert lines[1] == lines[4] == ('answer', 'Q2_FAST_1 says: Hello from Q2_FAST_1.')
    assert re.fullmatch(r'\[simple\] Q2_FAST_1 · fresh · \d+ ms', lines[2][1])
    assert re.fullmatch(r'\[simple\] Q2_FAST_1 · cached · \d+ ms', lines[5][1])
    lines = run_page(stack.backend.url, 'simple', False, False, 'one', '/clear', 'two')
    assert lines[:2] == [('echo', '> two'), ('answer', 'Q2_FAST_1 says: Hello from Q2_FAST_1.')]


@needs_node
def test_page_streams_over_websocket_and_shows_sources(stack, build_index):
    build_index(stack.backend.settings.faiss_dir, 'docs', [{'id': '1', 'text': 'Caddy serves the frontend.',
                                                            'source': 'docs/caddy.md'}])
    stack.backend.app.state.backend.store.reload_interval = 0
    lines = run_page(stack.backend.url, 'auto', True, True, 'Who serves the frontend', 'Compare it in depth')
    assert lines[0] == ('echo', '> Who serves the frontend')
    assert lines[1] == ('answer', 'Hello from Q2_FAST_1.')  # the streamed tokens, joined
    assert re.fullmatch(r'\[simple\] Q2_FAST_1 · fresh · \d+ ms', lines[2][1])
    assert lines[3][0] == 'sources' and lines[3][1].startswith('[1] docs/caddy.md (docs 0.')
    assert ('answer', 'Hello from Q4_DEEP_1.') in lines  # second query on the same socket


@needs_node
def test_page_shows_errors(servers, backend, tiers):
    ok = servers.llama('ok')
    running = backend(tiers([ok.url], [ok.url], [servers.refused()]))
    for stream in (False, True):
        lines = run_page(running.url, 'complex', False, stream, 'hi')
        assert lines[-1][0] == 'error'
        assert "error: every instance of tier 'complex' failed: Q4_DEEP_1" in lines[-1][1]
