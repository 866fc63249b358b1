# Copyright (c) 2026, multimodel.orchestration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The static frontend: self-contained, and its app.js works against the real backend, with
API keys (the login form, then the cookie) and without."""

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
    assert {'input', 'mode', 'retrieval', 'stream', 'log', 'prompt', 'login', 'key'} <= page.ids
    for name in os.listdir(FRONTEND):
        with open(os.path.join(FRONTEND, name), encoding='utf-8') as handle:
            text = handle.read()
        assert not re.search(r'(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/', text, re.I), name  # no external asset
        assert '@import' not in text and '.innerHTML' not in text


needs_node = pytest.mark.skipif(not NODE, reason='node is not installed (only the browser-side checks need it)')


@needs_node
def test_app_js_parses():
    subprocess.run([NODE, '--check', os.path.join(FRONTEND, 'app.js')], check=True)


def run_page(backend_url, mode, retrieval, stream, *queries, key=None):
    """The terminal's lines after the page ran the queries (typing key into its login form
    when it asks for one)."""
    return run_page_state(backend_url, mode, retrieval, stream, *queries, key=key)[0]


def run_page_state(backend_url, mode, retrieval, stream, *queries, key=None):
    """(lines, state): state is {"status", "login_shown", "key_left"} of the page at the end."""
    args = [NODE]
    if stream:
        if subprocess.run([NODE, '--experimental-websocket', '-e', ''], capture_output=True, check=False).returncode:
            pytest.skip('this node has no WebSocket client')
        args.append('--experimental-websocket')  # a global WebSocket like a browser's (node 20/21)
    result = subprocess.run(args + [os.path.join(HERE, 'frontend_harness.js'), os.path.join(FRONTEND, 'app.js'),
                                    backend_url, mode, '1' if retrieval else '0', '1' if stream else '0', *queries],
                            capture_output=True, text=True, timeout=60, check=False,
                            env=dict(os.environ, **({'MMO_KEY': key} if key else {})))
    assert result.returncode == 0, result.stderr
    *lines, state = json.loads(result.stdout)
    return [(line['cls'], line['text']) for line in lines], state


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


KEY = 'page-key-' + 'k' * 23
ASKS = ('error', 'this site needs an API key: enter it below')


@pytest.fixture
def keyed(servers, backend, tiers):
    ok = servers.llama('Q2_FAST_1')
    return backend(tiers([ok.url], [ok.url], [ok.url]), auth=True, api_keys=(KEY,))


@needs_node
@pytest.mark.parametrize('stream', [False, True])
def test_page_asks_for_the_key_once_then_uses_the_cookie(keyed, stream):
    lines, state = run_page_state(keyed.url, 'simple', False, stream, 'first', 'second', key=KEY)
    assert lines[:2] == [ASKS, ('meta', 'logged in')]
    assert [cls for cls, text in lines[2:]] == ['echo', 'answer', 'meta'] * 2
    assert lines[3][1].endswith('Hello from Q2_FAST_1.')
    assert state == {'status': 'ready', 'login_shown': False, 'key_left': ''}  # the form forgot the key
    metrics = keyed.http.get('/metrics').text
    assert 'mmo_auth_failures_total{reason="missing"} 1.0' in metrics  # only the first session check
    assert 'reason="invalid"' not in metrics


@needs_node
@pytest.mark.parametrize('stream', [False, True])
def test_page_with_a_wrong_key_asks_again(keyed, stream):
    lines, state = run_page_state(keyed.url, 'simple', False, stream, 'hi', key='not-the-key-' + 'x' * 20)
    assert lines == [ASKS, ('error', 'error: that key was refused'), ('echo', '> hi'),
                     ('error', 'error: the API key is missing or no longer valid: log in again')]
    assert state['login_shown'] is True and state['status'] == 'key needed'


@needs_node
def test_page_logout_forgets_the_cookie(keyed):
    lines, state = run_page_state(keyed.url, 'simple', False, False, 'hi', '/logout', 'again', key=KEY)
    assert lines[:5] == [ASKS, ('meta', 'logged in'), ('echo', '> hi'), ('answer', 'Q2_FAST_1 says: Hello from Q2_FAST_1.'),
                         lines[4]]
    assert lines[5:] == [('echo', '> /logout'), ASKS, ('echo', '> again'),
                         ('error', 'error: the API key is missing or no longer valid: log in again')]
    assert state['login_shown'] is True


@needs_node
def test_page_without_keys_shows_no_login(stack):
    lines, state = run_page_state(stack.backend.url, 'simple', False, False, 'hi')
    assert [cls for cls, text in lines] == ['echo', 'answer', 'meta']
    assert state == {'status': 'ready', 'login_shown': False, 'key_left': ''}
