# Copyright (c) 2026, multimodel.orchestration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Retrieval: the hashing embedder, the build_index CLI, FAISS search, reloads, SearXNG."""

import json
import os
import subprocess
import sys

import faiss
import numpy as np
import pytest

from multimodel_backend.embedder import embed
from multimodel_backend.retrieval import IndexStore

DOCS = [
    {'id': 'redis-1', 'text': 'Redis keeps the answer cache; every cached answer expires after MMO_CACHE_TTL seconds.',
     'source': 'docs/cache.md'},
    {'id': 'caddy-1', 'text': 'Caddy terminates TLS and serves the terminal frontend.', 'source': 'docs/caddy.md'},
    {'id': 'llama-1', 'text': 'llama-server instances answer 503 Loading model until the GGUF model is loaded.',
     'source': 'docs/llama.md'},
    {'id': 'faiss-1', 'text': 'FAISS indexes are reloaded when their files change.', 'source': 'docs/faiss.md'},
]


def test_embedder_is_deterministic_normalised_and_lexical(app_dir):
    vectors = embed(['the answer cache expires', 'the answer cache expires', 'Caddy serves TLS', ''], 256)
    assert vectors.shape == (4, 256) and vectors.dtype == np.float32
    assert np.array_equal(vectors[0], vectors[1])
    assert np.allclose(np.linalg.norm(vectors[:3], axis=1), 1.0) and not vectors[3].any()
    query = embed(['when does a cached answer expire'], 256)[0]
    assert query @ vectors[0] > query @ vectors[2]
    # Stable across processes (BLAKE2b, not Python's salted hash()).
    code = ('import sys; sys.path.insert(0, sys.argv[1]); from multimodel_backend.embedder import embed; '
            'print(embed(["the answer cache expires"], 256)[0].tolist())')
    other = subprocess.run([sys.executable, '-c', code, app_dir], capture_output=True, text=True, check=True,
                           env=dict(os.environ, PYTHONHASHSEED='123'))
    assert np.allclose(json.loads(other.stdout), vectors[0])


def test_cli_builds_a_real_faiss_index(tmp_path, build_index):
    result = build_index(tmp_path / 'idx', 'docs', DOCS, '--dim', '512')
    assert result.returncode == 0, result.stderr
    assert 'wrote' in result.stdout and '4 passages, dim 512' in result.stdout
    index = faiss.read_index(str(tmp_path / 'idx' / 'docs.faiss'))
    assert index.ntotal == 4 and index.d == 512
    meta = json.loads((tmp_path / 'idx' / 'docs.meta.json').read_text())
    assert [m['id'] for m in meta] == ['redis-1', 'caddy-1', 'llama-1', 'faiss-1']
    scores, ids = index.search(embed(['Which server terminates TLS?'], 512), 1)
    assert ids[0][0] == 1
    assert sorted(os.listdir(tmp_path / 'idx')) == ['docs.faiss', 'docs.meta.json']  # no temp files left


@pytest.mark.parametrize('line, message', [
    ('{"text": ""}', 'needs a non-empty string "text"'),
    ('{"id": 1}', 'needs a non-empty string "text"'),
    ('not json', 'not JSON'),
])
def test_cli_rejects_bad_documents(tmp_path, app_dir, line, message):
    docs = tmp_path / 'bad.jsonl'
    docs.write_text('{"text": "fine"}\n' + line + '\n')
    result = subprocess.run([sys.executable, '-m', 'multimodel_backend.build_index', str(tmp_path / 'idx'), 'bad',
                             str(docs)], capture_output=True, text=True, cwd=app_dir, check=False)
    assert result.returncode != 0
    assert f'bad.jsonl:2: {message}' in result.stderr
    assert not (tmp_path / 'idx' / 'bad.faiss').exists()


def fresh_index(stack, build_index, docs):
    """Build an index under the running backend and make it look now (not within 2 s)."""
    assert build_index(stack.backend.settings.faiss_dir, 'docs', docs).returncode == 0
    stack.backend.app.state.backend.store.reload_interval = 0


def test_query_with_retrieval_prepends_passages_and_returns_sources(stack, build_index, redis_db, wait_until):
    fresh_index(stack, build_index, DOCS)
    body = stack.backend.query('How long is a cached answer kept in Redis?', mode='simple', use_retrieval=True).json()
    sources = body['sources']
    assert sources[0]['id'] == 'redis-1' and sources[0]['source'] == 'docs/cache.md'
    assert sources[0]['index'] == 'docs' and 0 < sources[0]['score'] <= 1
    assert all(s['score'] > 0 for s in sources) and len(sources) <= 4
    prompt = stack.fast1.chats()[0].json['messages'][-1]['content']
    assert prompt.startswith('Use these passages')
    assert '[1] ' + DOCS[0]['text'] in prompt and '(source: docs/cache.md)' in prompt
    assert prompt.endswith('Question: How long is a cached answer kept in Redis?')
    # The cached answer keeps its sources.
    wait_until(lambda: redis_db.client.keys('mmo:v2:query:*'), what='the cache entry')
    again = stack.backend.query('How long is a cached answer kept in Redis?', mode='simple', use_retrieval=True)
    assert again.json()['cached'] is True and again.json()['sources'] == sources


def test_an_index_rebuild_changes_the_cache_key(stack, build_index, redis_db, wait_until):
    question = 'Which server terminates TLS?'
    fresh_index(stack, build_index, DOCS)
    assert stack.backend.query(question, mode='simple', use_retrieval=True).json()['cached'] is False
    wait_until(lambda: redis_db.client.keys('mmo:v2:query:*'), what='the cache entry')
    assert stack.backend.query(question, mode='simple', use_retrieval=True).json()['cached'] is True
    # Rebuilt with other passages: the cached answer was built on the old ones.
    fresh_index(stack, build_index, DOCS + [{'id': 'caddy-2', 'text': 'Caddy terminates TLS with ACME certificates.'}])
    again = stack.backend.query(question, mode='simple', use_retrieval=True).json()
    assert again['cached'] is False and 'caddy-2' in [s['id'] for s in again['sources']]
    # A query without retrieval does not depend on the indexes.
    assert stack.backend.query('hello', mode='simple').json()['cached'] is False


def test_the_index_fingerprint_follows_the_files(tmp_path, build_index):
    directory = tmp_path / 'faiss'
    store = IndexStore(str(directory), reload_interval=0)
    store.refresh()
    empty = store.fingerprint
    build_index(directory, 'docs', DOCS)
    store.refresh()
    built = store.fingerprint
    store.refresh()
    assert built == store.fingerprint != empty  # unchanged files, same version
    build_index(directory, 'docs', DOCS[:2])
    store.refresh()
    assert store.fingerprint not in (built, empty)


def test_without_retrieval_no_index_is_searched(stack, build_index):
    fresh_index(stack, build_index, DOCS)
    body = stack.backend.query('How long is a cached answer kept in Redis?', mode='simple').json()
    assert body['sources'] == []
    assert stack.fast1.chats()[0].json['messages'][-1]['content'] == 'How long is a cached answer kept in Redis?'


def test_indexes_reload_when_files_change(tmp_path, build_index):
    directory = tmp_path / 'faiss'
    store = IndexStore(str(directory), reload_interval=0)
    assert store.search('Caddy TLS') == []  # no directory yet: no indexes, no error
    build_index(directory, 'docs', DOCS[:2])
    assert store.search('Which server terminates TLS')[0]['id'] == 'caddy-1'
    build_index(directory, 'more', DOCS[2:])
    assert store.search('GGUF model loaded')[0]['index'] == 'more' and set(store.indexes) == {'docs', 'more'}
    build_index(directory, 'docs', [{'id': 'new', 'text': 'Caddy now also terminates TLS for Grafana.'}])
    assert store.search('Which server terminates TLS')[0]['id'] == 'new'
    os.unlink(directory / 'more.faiss')
    store.refresh()
    assert set(store.indexes) == {'docs'}


def test_a_broken_index_keeps_the_previous_version(tmp_path, build_index):
    directory = tmp_path / 'faiss'
    build_index(directory, 'docs', DOCS)
    store = IndexStore(str(directory), reload_interval=0)
    store.refresh()
    (directory / 'docs.meta.json').write_text('[]')  # count no longer matches the vectors
    (directory / 'junk.faiss').write_bytes(b'not an index')
    (directory / 'junk.meta.json').write_text('[]')
    assert store.search('Which server terminates TLS')[0]['id'] == 'caddy-1'
    assert set(store.indexes) == {'docs'}


def test_backend_picks_up_a_new_index_without_restart(stack, build_index):
    assert stack.backend.query('Which server terminates TLS', mode='simple', use_retrieval=True).json()['sources'] == []
    fresh_index(stack, build_index, DOCS)
    body = stack.backend.query('Which server terminates TLS?', mode='simple', use_retrieval=True).json()
    assert body['sources'][0]['id'] == 'caddy-1'


def test_searxng_results_become_sources(servers, backend, tiers):
    fast = servers.llama('Q2_FAST_1')
    searxng = servers.searxng([
        {'url': 'https://example.org/a', 'title': 'A', 'content': 'First web result.', 'engine': 'x'},
        {'url': 'https://example.org/b', 'title': 'B', 'content': '', 'engine': 'x'},
        {'url': 'https://example.org/c', 'title': 'C', 'content': 'Third.', 'engine': 'x'},
        {'url': 'https://example.org/d', 'title': 'D', 'content': 'Fourth.', 'engine': 'x'},
    ])
    running = backend(tiers([fast.url], [fast.url], [fast.url]), searxng_url=searxng.url)
    body = running.query('latest llama.cpp release', mode='simple', use_web=True).json()
    assert [s['source'] for s in body['sources']] == [
        'https://example.org/a', 'https://example.org/b', 'https://example.org/c']
    assert body['sources'][1]['text'] == 'B' and body['sources'][0]['index'] == 'web'
    assert searxng.queries == ['/search?q=latest+llama.cpp+release&format=json']
    assert 'First web result.' in fast.chats()[0].json['messages'][-1]['content']


def test_searxng_down_still_answers(servers, backend, tiers):
    fast = servers.llama('Q2_FAST_1')
    running = backend(tiers([fast.url], [fast.url], [fast.url]), searxng_url=servers.refused())
    reply = running.query('latest news', mode='simple', use_web=True)
    assert reply.status_code == 200 and reply.json()['sources'] == []
