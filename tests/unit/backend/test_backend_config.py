# Copyright (c) 2026, multimodel.orchestration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Settings from the MMO_* environment, and the auto-routing heuristic."""

import json

import pytest

from multimodel_backend.config import ConfigError, Instance, Settings, TierLimit, load_settings
from multimodel_backend.routing import route

TIERS = [
    {'name': 'Q2_FAST_1', 'url': 'http://10.0.0.5:8080', 'alias': 'q2-fast', 'complexity': 'simple'},
    {'name': 'Q2_FAST_2', 'url': 'http://10.0.0.6:8080/', 'alias': 'q2-fast', 'complexity': 'simple'},
    {'name': 'Q3_SYNTH', 'url': 'http://10.0.0.7:8081', 'alias': 'q3-synth', 'complexity': 'moderate'},
    {'name': 'Q4_DEEP', 'url': 'https://deep.internal:8443', 'complexity': 'complex'},
]
# MMO_AUTH=off: the tests of other variables need no key file (auth has its own tests below).
GOOD = {'MMO_TIERS_JSON': json.dumps(TIERS), 'MMO_REDIS_URL': 'redis://:s3cret@redis:6379/0', 'MMO_AUTH': 'off'}
KEY1, KEY2 = 'k1-' + 'a' * 29, 'k2-' + 'b' * 29


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
    assert settings.drain_delay == 0.0 and settings.tier_wait == 0.0
    assert (settings.auth, settings.api_keys, settings.allowed_origins, settings.max_body_bytes) == (False, (), (), 65536)
    assert (settings.queue_timeout, settings.redis_timeout, settings.breaker_seconds) == (10.0, 0.05, 5.0)
    assert dict(settings.tier_limits) == {level: TierLimit(1024, 8) for level in ('simple', 'moderate', 'complex')}
    assert settings.instances[0].model is None

    settings = load_settings(env(MMO_LLAMA_API_KEY='key', MMO_FAISS_DIR='/srv/idx', MMO_SEARXNG_URL='http://sx:8080/',
                                 MMO_CORS_ORIGINS='https://a.example, https://b.example,', MMO_CACHE_TTL='0',
                                 MMO_REQUEST_TIMEOUT='2.5', MMO_MAX_TOKENS='64', MMO_DRAIN_DELAY='2.5',
                                 MMO_TIER_WAIT='30'))
    assert settings.llama_api_key == 'key' and settings.faiss_dir == '/srv/idx'
    assert settings.searxng_url == 'http://sx:8080' and settings.cors_origins == ('https://a.example',
                                                                                  'https://b.example')
    assert (settings.cache_ttl, settings.request_timeout, settings.max_tokens, settings.drain_delay) == (0, 2.5, 64, 2.5)
    assert settings.tier_wait == 30.0
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
    ({'MMO_TIER_WAIT': '-0.5'}, "MMO_TIER_WAIT must be a number >= 0.0, got '-0.5'"),
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


def test_model_identity_from_tiers_json():
    tiers = [dict(TIERS[0], model='sha256:abc'), TIERS[1], dict(TIERS[2], model=''), TIERS[3]]
    settings = load_settings(env(MMO_TIERS_JSON=json.dumps(tiers)))
    assert [i.model for i in settings.instances] == ['sha256:abc', None, None, None]
    with pytest.raises(ConfigError) as error:
        load_settings(env(MMO_TIERS_JSON=json.dumps([dict(TIERS[0], model=1)] + TIERS[1:])))
    assert "MMO_TIERS_JSON: entry 1 (Q2_FAST_1): 'model' must be a string" in str(error.value)


def test_api_keys_and_auth(tmp_path):
    keys = tmp_path / 'api_keys'
    keys.write_text(f'# the site key\n\n  {KEY1}  \n{KEY2}\n{KEY1}\n')
    for auth in (None, 'on', 'ON '):
        settings = load_settings(env(MMO_AUTH=auth, MMO_API_KEYS_FILE=str(keys)))
        assert settings.auth is True and settings.api_keys == (KEY1, KEY2)
    assert KEY1 in settings.secrets() and KEY2 in settings.secrets()  # masked in log lines
    settings = load_settings(env(MMO_AUTH='off', MMO_API_KEYS_FILE=str(keys)))
    assert settings.auth is False and settings.api_keys == (KEY1, KEY2)
    assert load_settings(env(MMO_AUTH='off')).api_keys == ()
    # Settings built directly (tests) have auth off.
    assert Settings(instances=(), redis_url='redis://r').auth is False


@pytest.mark.parametrize('content, changes, message', [
    (None, {'MMO_AUTH': None},
     'MMO_AUTH is on but MMO_API_KEYS_FILE holds no key: set keys, or MMO_AUTH=off'),
    ('# only a comment\n\n', {'MMO_AUTH': 'on'},
     'MMO_AUTH is on but MMO_API_KEYS_FILE holds no key: set keys, or MMO_AUTH=off'),
    (KEY1, {'MMO_AUTH': 'yes'}, "MMO_AUTH must be on or off, got 'yes'"),
    (f'{KEY1}\nshort-secret\n', {},
     'MMO_API_KEYS_FILE: line 2 of {path} is not a usable key (at least 16 printable characters '
     'without spaces; value not shown)'),
    ('with a space in the key\n', {}, 'MMO_API_KEYS_FILE: line 1 of {path} is not a usable key'),
    ('tab\there-is-a-long-key\n', {}, 'MMO_API_KEYS_FILE: line 1 of {path} is not a usable key'),
])
def test_api_key_errors(tmp_path, content, changes, message):
    path = tmp_path / 'api_keys'
    if content is not None:
        path.write_text(content)
        changes = dict(changes, MMO_API_KEYS_FILE=str(path))
    with pytest.raises(ConfigError) as error:
        load_settings(env(**changes))
    assert str(error.value).startswith(message.format(path=path))
    assert 'short-secret' not in str(error.value) and 'space in the key' not in str(error.value)


def test_api_keys_file_unreadable(tmp_path):
    with pytest.raises(ConfigError) as error:
        load_settings(env(MMO_AUTH='on', MMO_API_KEYS_FILE=str(tmp_path / 'missing')))
    assert str(error.value) == f'MMO_API_KEYS_FILE: cannot read {tmp_path / "missing"}: No such file or directory'


def test_limits_origins_and_cache_timeouts():
    settings = load_settings(env(
        MMO_ALLOWED_ORIGINS='https://chat.example.org, http://localhost:8080', MMO_MAX_BODY_BYTES='1048576',
        MMO_MAX_TOKENS='512', MMO_TIER_LIMITS_JSON=json.dumps({'simple': {'max_tokens': 2048, 'concurrency': 2},
                                                               'complex': {'concurrency': 1}}),
        MMO_QUEUE_TIMEOUT='0.5', MMO_REDIS_TIMEOUT='0.2', MMO_REDIS_BREAKER_SECONDS='0'))
    assert settings.allowed_origins == ('https://chat.example.org', 'http://localhost:8080')
    assert settings.max_body_bytes == 1048576
    assert dict(settings.tier_limits) == {'simple': TierLimit(2048, 2), 'moderate': TierLimit(1024, 8),
                                          'complex': TierLimit(1024, 1)}
    assert (settings.queue_timeout, settings.redis_timeout, settings.breaker_seconds) == (0.5, 0.2, 0.0)
    # The default max_tokens of a tier follows MMO_MAX_TOKENS when that is above 1024.
    settings = load_settings(env(MMO_MAX_TOKENS='4096'))
    assert settings.tier_limits['moderate'] == TierLimit(4096, 8)
    assert Settings(instances=(), redis_url='redis://r', max_tokens=2000,
                    tier_limits={'simple': TierLimit(64, 1)}).tier_limits['complex'] == TierLimit(2000, 8)


@pytest.mark.parametrize('changes, message', [
    ({'MMO_ALLOWED_ORIGINS': 'https://a.example/chat'}, "MMO_ALLOWED_ORIGINS: 'https://a.example/chat' is not an origin"),
    ({'MMO_MAX_BODY_BYTES': '10'}, "MMO_MAX_BODY_BYTES must be a whole number >= 1024, got '10'"),
    ({'MMO_MAX_BODY_BYTES': '64k'}, "MMO_MAX_BODY_BYTES must be a whole number >= 1024, got '64k'"),
    ({'MMO_QUEUE_TIMEOUT': '-1'}, "MMO_QUEUE_TIMEOUT must be a number >= 0.0, got '-1'"),
    ({'MMO_REDIS_TIMEOUT': '0'}, "MMO_REDIS_TIMEOUT must be a number >= 0.001, got '0'"),
    ({'MMO_REDIS_BREAKER_SECONDS': 'never'}, "MMO_REDIS_BREAKER_SECONDS must be a number >= 0.0, got 'never'"),
    ({'MMO_TIER_LIMITS_JSON': '{'}, 'MMO_TIER_LIMITS_JSON is not valid JSON'),
    ({'MMO_TIER_LIMITS_JSON': '[]'}, 'MMO_TIER_LIMITS_JSON must be a JSON object keyed by complexity'),
    ({'MMO_TIER_LIMITS_JSON': '{"hard": {}}'}, "MMO_TIER_LIMITS_JSON: 'hard' is not a complexity"),
    ({'MMO_TIER_LIMITS_JSON': '{"simple": 8}'}, 'MMO_TIER_LIMITS_JSON: simple must be an object'),
    ({'MMO_TIER_LIMITS_JSON': '{"simple": {"max_token": 8}}'},
     'MMO_TIER_LIMITS_JSON: simple: unknown key(s) max_token (max_tokens, concurrency)'),
    ({'MMO_TIER_LIMITS_JSON': '{"simple": {"concurrency": 0}}'},
     "MMO_TIER_LIMITS_JSON: simple: 'concurrency' must be a whole number >= 1, got 0"),
    ({'MMO_TIER_LIMITS_JSON': '{"simple": {"concurrency": true}}'},
     "MMO_TIER_LIMITS_JSON: simple: 'concurrency' must be a whole number >= 1, got True"),
    ({'MMO_TIER_LIMITS_JSON': '{"moderate": {"max_tokens": "2k"}}'},
     "MMO_TIER_LIMITS_JSON: moderate: 'max_tokens' must be a whole number >= 1, got '2k'"),
    ({'MMO_TIER_LIMITS_JSON': '{"simple": {"max_tokens": 128}}'},
     "MMO_TIER_LIMITS_JSON: simple: 'max_tokens' 128 is below MMO_MAX_TOKENS 256"),
])
def test_limit_errors(changes, message):
    with pytest.raises(ConfigError) as error:
        load_settings(env(**changes))
    assert message in str(error.value)
