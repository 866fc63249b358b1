# Copyright (c) 2026, multimodel.orchestration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Settings from the MMO_* environment, and the auto-routing heuristic."""

import json

import pytest

from multimodel_backend.config import ConfigError, Instance, load_settings
from multimodel_backend.routing import route

TIERS = [
    {'name': 'Q2_FAST_1', 'url': 'http://10.0.0.5:8080', 'alias': 'q2-fast', 'complexity': 'simple'},
    {'name': 'Q2_FAST_2', 'url': 'http://10.0.0.6:8080/', 'alias': 'q2-fast', 'complexity': 'simple'},
    {'name': 'Q3_SYNTH', 'url': 'http://10.0.0.7:8081', 'alias': 'q3-synth', 'complexity': 'moderate'},
    {'name': 'Q4_DEEP', 'url': 'https://deep.internal:8443', 'complexity': 'complex'},
]
GOOD = {'MMO_TIERS_JSON': json.dumps(TIERS), 'MMO_REDIS_URL': 'redis://:s3cret@redis:6379/0'}


def env(**changes):
    result = dict(GOOD)
    for key, value in changes.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = value
    return result


def test_defaults_and_full_settings():
    settings = load_settings(GOOD)
    assert settings.instances[1] == Instance('Q2_FAST_2', 'http://10.0.0.6:8080', 'simple', 'q2-fast')
    assert settings.instances[3].alias is None
    assert [i.name for i in settings.tier('simple')] == ['Q2_FAST_1', 'Q2_FAST_2']
    assert (settings.faiss_dir, settings.cache_ttl, settings.request_timeout, settings.max_tokens) == \
        ('/data/faiss', 3600, 120.0, 256)
    assert settings.llama_api_key is None and settings.searxng_url is None and settings.cors_origins == ()
    assert settings.drain_delay == 0.0

    settings = load_settings(env(MMO_LLAMA_API_KEY='key', MMO_FAISS_DIR='/srv/idx', MMO_SEARXNG_URL='http://sx:8080/',
                                 MMO_CORS_ORIGINS='https://a.example, https://b.example,', MMO_CACHE_TTL='0',
                                 MMO_REQUEST_TIMEOUT='2.5', MMO_MAX_TOKENS='64', MMO_DRAIN_DELAY='2.5'))
    assert settings.llama_api_key == 'key' and settings.faiss_dir == '/srv/idx'
    assert settings.searxng_url == 'http://sx:8080' and settings.cors_origins == ('https://a.example',
                                                                                  'https://b.example')
    assert (settings.cache_ttl, settings.request_timeout, settings.max_tokens, settings.drain_delay) == (0, 2.5, 64, 2.5)
    assert load_settings(env(MMO_CORS_ORIGINS='http://[::1]:3000,http://localhost:8080')).cors_origins == (
        'http://[::1]:3000', 'http://localhost:8080')
    assert set(settings.secrets()) == {'key', 's3cret'}
    assert load_settings(env(MMO_REDIS_URL='redis://:p%40ss@r:6379/0')).secrets() == ['p%40ss', 'p@ss']
    assert load_settings(env(MMO_REDIS_URL='unix:///run/redis.sock?password=pw1')).secrets() == ['pw1']


@pytest.mark.parametrize('tiers_json, message', [
    (None, 'MMO_TIERS_JSON is required'),
    ('  ', 'MMO_TIERS_JSON is required'),
    ('[{"name": ', 'MMO_TIERS_JSON is not valid JSON'),
    ('{"name": "x"}', 'MMO_TIERS_JSON must be a non-empty JSON list'),
    ('[]', 'MMO_TIERS_JSON must be a non-empty JSON list'),
    ('["x"]', 'MMO_TIERS_JSON: entry 1 must be an object, got str'),
    (json.dumps([{'url': 'http://a:1', 'complexity': 'simple'}]), "MMO_TIERS_JSON: entry 1 needs a non-empty string 'name'"),
    (json.dumps(TIERS + [TIERS[0]]), 'MMO_TIERS_JSON: entry 5 (Q2_FAST_1): duplicate name'),
    (json.dumps([dict(TIERS[0], complexity='hard')]),
     "MMO_TIERS_JSON: entry 1 (Q2_FAST_1): 'complexity' must be one of simple, moderate, complex, got 'hard'"),
    (json.dumps([dict(TIERS[0], url='10.0.0.5:8080')]),
     "MMO_TIERS_JSON: entry 1 (Q2_FAST_1): 'url' must be an http:// or https:// URL, got '10.0.0.5:8080'"),
    (json.dumps([dict(TIERS[0], url=None)]), "MMO_TIERS_JSON: entry 1 (Q2_FAST_1) needs a string 'url'"),
    (json.dumps([dict(TIERS[0], alias=3)]), "MMO_TIERS_JSON: entry 1 (Q2_FAST_1): 'alias' must be a string"),
    (json.dumps(TIERS[:3]), 'MMO_TIERS_JSON has no instance for complexity complex'),
])
def test_tiers_errors_name_the_variable(tiers_json, message):
    with pytest.raises(ConfigError) as error:
        load_settings(env(MMO_TIERS_JSON=tiers_json))
    assert message in str(error.value)


@pytest.mark.parametrize('changes, message', [
    ({'MMO_REDIS_URL': None}, 'MMO_REDIS_URL is required'),
    ({'MMO_REDIS_URL': 'http://:s3cret@redis:6379'}, 'MMO_REDIS_URL must be a redis://, rediss:// or unix:// URL'),
    ({'MMO_REDIS_URL': 'redis://:s3cret@'}, 'MMO_REDIS_URL must be a redis://'),
    ({'MMO_CACHE_TTL': '-1'}, "MMO_CACHE_TTL must be a whole number >= 0, got '-1'"),
    ({'MMO_CACHE_TTL': '1h'}, "MMO_CACHE_TTL must be a whole number >= 0, got '1h'"),
    ({'MMO_REQUEST_TIMEOUT': '0'}, "MMO_REQUEST_TIMEOUT must be a number >= 0.1, got '0'"),
    ({'MMO_REQUEST_TIMEOUT': 'nan'}, 'MMO_REQUEST_TIMEOUT must be a number'),
    ({'MMO_REQUEST_TIMEOUT': 'inf'}, 'MMO_REQUEST_TIMEOUT must be a number'),
    ({'MMO_MAX_TOKENS': '0'}, "MMO_MAX_TOKENS must be a whole number >= 1, got '0'"),
    ({'MMO_SEARXNG_URL': 'searxng:8080'}, 'MMO_SEARXNG_URL must be an http:// or https:// URL'),
    ({'MMO_CORS_ORIGINS': 'https://a.example,not a url'}, "MMO_CORS_ORIGINS: 'not a url' is not an origin"),
    ({'MMO_CORS_ORIGINS': 'https://a.example/'}, "MMO_CORS_ORIGINS: 'https://a.example/' is not an origin"),
    ({'MMO_CORS_ORIGINS': 'ftp://a.example'}, "MMO_CORS_ORIGINS: 'ftp://a.example' is not an origin"),
    ({'MMO_CORS_ORIGINS': 'http://a.example:99999'}, "MMO_CORS_ORIGINS: 'http://a.example:99999' is not an origin"),
    ({'MMO_DRAIN_DELAY': '-1'}, "MMO_DRAIN_DELAY must be a number >= 0.0, got '-1'"),
])
def test_other_variables(changes, message):
    with pytest.raises(ConfigError) as error:
        load_settings(env(**changes))
    assert message in str(error.value)
    assert 's3cret' not in str(error.value)  # the Redis URL's password is never echoed


@pytest.mark.parametrize('query, level', [
    ('hi', 'simple'),
    ('What is the capital of France?', 'simple'),
    ('Who wrote Dune', 'simple'),
    ('Explain recursion', 'moderate'),
    ('why is the sky blue', 'moderate'),
    ('Summarize this paragraph for me', 'moderate'),
    ('Is it raining? Should I take an umbrella?', 'moderate'),
    (' '.join(['word'] * 16), 'moderate'),
    ('Compare PostgreSQL and MySQL', 'complex'),
    ('Design a rate limiter', 'complex'),
    ('Walk me through it step by step', 'complex'),
    ('What are the trade-offs of caching?', 'complex'),
    ('Fix this:\n```\nprint(1\n```', 'complex'),
    (' '.join(['word'] * 61), 'complex'),
    ('Showcase your knowledge', 'simple'),  # "how" inside "showcase" is not the word how
])
def test_auto_heuristic(query, level):
    assert route(query) == level
    assert route(query, 'auto') == level


def test_explicit_mode_wins():
    for mode in ('simple', 'moderate', 'complex'):
        assert route('Design a distributed database step by step', mode) == mode


def test_secrets_from_files(tmp_path):
    url_file, key_file = tmp_path / 'redis_url', tmp_path / 'api_key'
    url_file.write_text('redis://:from-file@redis:6379/1\n')
    key_file.write_text('key-from-file\n')
    settings = load_settings(env(MMO_REDIS_URL=None, MMO_REDIS_URL_FILE=str(url_file),
                                 MMO_LLAMA_API_KEY_FILE=str(key_file)))
    assert settings.redis_url == 'redis://:from-file@redis:6379/1'
    assert settings.llama_api_key == 'key-from-file'
    assert 'from-file' in settings.secrets() and 'key-from-file' in settings.secrets()


@pytest.mark.parametrize('changes, message', [
    ({'MMO_REDIS_URL_FILE': '/nonexistent/redis_url'}, 'set MMO_REDIS_URL or MMO_REDIS_URL_FILE, not both'),
    ({'MMO_REDIS_URL': None, 'MMO_REDIS_URL_FILE': '/nonexistent/redis_url'},
     'MMO_REDIS_URL_FILE: cannot read /nonexistent/redis_url: No such file or directory'),
])
def test_secret_file_errors(changes, message):
    with pytest.raises(ConfigError) as error:
        load_settings(env(**changes))
    assert str(error.value) == message
