# -*- coding: utf-8 -*-
# Copyright (c) 2026, multimodel.orchestration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Health probing of llama.cpp ``llama-server`` endpoints.

Standard library only, so it runs on any target and can be unit tested without Ansible.
Private to this collection (used by its modules): not a public API, it may change in any release.
The entry points are :func:`normalize_endpoints` (input validation),
:func:`probe_endpoint` (one endpoint, retried until a deadline) and
:func:`probe_endpoints` (many endpoints concurrently).
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import socket
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Optional
from urllib.error import HTTPError, URLError
from urllib.parse import urlsplit
from urllib.request import HTTPRedirectHandler, HTTPSHandler, OpenerDirector, ProxyHandler, Request, build_opener

# Failure reasons (the ``reason`` field of a result).
REFUSED = 'refused'
TIMEOUT = 'timeout'
CONNECTION_ERROR = 'connection_error'
UNAUTHORIZED = 'unauthorized'
WRONG_MODEL = 'wrong_model'
LOADING = 'loading'
BAD_RESPONSE = 'bad_response'

# Reasons that say nothing answered; summarised as status "unreachable".
_UNREACHABLE = (REFUSED, TIMEOUT, CONNECTION_ERROR)

# Upper bound on a response body we read: /slots of a many-slot server is the largest.
_MAX_BODY = 8 * 1024 * 1024
# A request started close to the deadline still gets this long, so that the last attempt
# reports the server's real state instead of a timeout we caused ourselves.
_MIN_REQUEST_TIMEOUT = 0.5
# One thread per endpoint up to this many, so that every endpoint is probed from the start
# of the call; past it an endpoint waits for a thread and, if its turn comes after the one
# deadline, gets a single attempt.
_MAX_WORKERS = 256
_USER_AGENT = 'multimodel.orchestration-model_health'


class ProbeFailure(Exception):
    """One failed probe attempt: a short reason, a human detail, and whether to retry."""

    def __init__(self, reason: str, detail: Optional[str] = None, retry: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail
        self.retry = retry
        # What the attempt learnt before failing (e.g. the served models).
        self.found: dict[str, Any] = {}


class ProbeOptions:
    """Settings shared by every endpoint of one probe run."""

    def __init__(self, api_key: Optional[str] = None, request_timeout: float = 30.0, interval: float = 1.0,
                 generate: bool = False, prompt: str = 'Hello', max_tokens: int = 8, check_slots: bool = False,
                 validate_certs: bool = True, use_proxy: bool = True, read_build: bool = False) -> None:
        self.api_key = api_key
        self.request_timeout = float(request_timeout)
        self.interval = float(interval)
        self.generate = bool(generate)
        self.prompt = prompt
        self.max_tokens = int(max_tokens)
        self.check_slots = bool(check_slots)
        self.validate_certs = bool(validate_certs)
        self.use_proxy = bool(use_proxy)
        # Also read the llama.cpp build the server reports (GET /props), as result "build".
        self.read_build = bool(read_build)


def normalize_endpoints(endpoints: Any) -> list[dict[str, Any]]:
    """Validate the endpoint list and return cleaned copies.

    Each entry needs ``url`` (http or https, host required, no query or fragment);
    ``name`` defaults to the URL and must be unique; ``alias`` and ``api_key`` are optional.
    Raises ValueError with a message naming the bad value.
    """
    if not endpoints:
        raise ValueError('endpoints must list at least one llama-server endpoint')
    cleaned = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(endpoints, start=1):
        if not isinstance(entry, dict):
            raise ValueError('endpoints[%d] must be a dict with a url, got %r' % (index, entry))
        url = entry.get('url')
        if not url or not isinstance(url, str):
            raise ValueError('endpoints[%d] has no url' % index)
        parts = urlsplit(url)
        if parts.scheme not in ('http', 'https'):
            raise ValueError("endpoints[%d] url %r must use http:// or https://, not %r"
                             % (index, url, parts.scheme or '(none)'))
        try:
            host, port = parts.hostname, parts.port
        except ValueError as exc:
            # urlsplit only checks the port when asked for it.
            raise ValueError('endpoints[%d] url %r is not valid: %s' % (index, url, exc))
        if not host:
            raise ValueError('endpoints[%d] url %r has no host' % (index, url))
        if parts.query or parts.fragment:
            raise ValueError('endpoints[%d] url %r must not have a query or fragment' % (index, url))
        if port is not None and not 0 < port < 65536:
            raise ValueError('endpoints[%d] url %r has an invalid port' % (index, url))
        name = entry.get('name') or url
        if name in seen:
            raise ValueError('duplicate endpoint name %r (endpoints[%d] and endpoints[%d])'
                             % (name, seen[name], index))
        seen[name] = index
        alias = entry.get('alias')
        if alias is not None and not isinstance(alias, str):
            raise ValueError('endpoints[%d] alias must be a string, got %r' % (index, alias))
        cleaned.append({
            'name': str(name),
            # A path prefix is allowed (reverse proxy); a trailing slash would double up.
            'url': url.rstrip('/'),
            'alias': alias or None,
            'api_key': entry.get('api_key') or None,
        })
    return cleaned


def failure_summary(result: dict[str, Any]) -> str:
    """One line for an unhealthy result, e.g. "Q4 (http://h:8080): wrong_model (...)"."""
    text = '%s (%s): %s' % (result['name'], result['url'], result['reason'])
    if result.get('detail'):
        text += ' (%s)' % result['detail']
    return text


class _NoRedirect(HTTPRedirectHandler):
    """Do not follow redirects: llama-server never redirects, and following one would
    send the Authorization header to wherever it points."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


def _is_loopback(host: Optional[str]) -> bool:
    """localhost (and *.localhost) or an address in 127.0.0.0/8 or ::1."""
    host = (host or '').lower().rstrip('.')
    if host == 'localhost' or host.endswith('.localhost'):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _proxy_allowed(url: str, sends_key: bool, options: ProbeOptions) -> bool:
    """Whether a proxy from the environment may carry the requests to url.

    Never for a loopback URL (the server is on this host; a proxy would at best fail and at
    worst be handed the key), and never for plain http with an API key: an http proxy reads
    every header, so the bearer key would be handed to it. https goes through a proxy only as
    a CONNECT tunnel, with the key inside TLS, end to end.
    """
    parts = urlsplit(url)
    if not options.use_proxy or _is_loopback(parts.hostname):
        return False
    return parts.scheme == 'https' or not sends_key


def _build_opener(options: ProbeOptions, url: str, sends_key: bool) -> OpenerDirector:
    handlers: list[Any] = [_NoRedirect()]
    if not _proxy_allowed(url, sends_key, options):
        handlers.append(ProxyHandler({}))
    https = url.startswith('https:')
    if https:
        # Only for https: loading the CA bundle costs ~10-20 ms per endpoint.
        context = ssl.create_default_context()
        if not options.validate_certs:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        handlers.append(HTTPSHandler(context=context))
    return build_opener(*handlers)


def _os_error_failure(error: OSError, what: str) -> ProbeFailure:
    """Map a socket-level error to a ProbeFailure."""
    if isinstance(error, ConnectionRefusedError):
        return ProbeFailure(REFUSED)
    if isinstance(error, (socket.timeout, TimeoutError)):
        return ProbeFailure(TIMEOUT, 'no answer to %s in time' % what)
    if isinstance(error, ssl.SSLError):
        # A TLS/certificate problem will not fix itself by waiting.
        return ProbeFailure(CONNECTION_ERROR, '%s: %s' % (what, error), retry=False)
    return ProbeFailure(CONNECTION_ERROR, '%s: %s' % (what, error))


class _Client:
    """HTTP calls to one llama-server, each bounded by the per-request timeout and the
    endpoint's deadline."""

    def __init__(self, base_url: str, api_key: Optional[str], options: ProbeOptions, deadline: float) -> None:
        self.base_url = base_url
        self.options = options
        self.deadline = deadline
        self.opener = _build_opener(options, base_url, bool(api_key))
        self.headers = {'Accept': 'application/json', 'User-Agent': _USER_AGENT}
        if api_key:
            self.headers['Authorization'] = 'Bearer ' + api_key

    def _timeout(self) -> float:
        remaining = self.deadline - time.monotonic()
        return max(_MIN_REQUEST_TIMEOUT, min(self.options.request_timeout, remaining))

    def call(self, method: str, path: str, payload: Optional[dict[str, Any]] = None) -> tuple[int, bytes]:
        """Return (http status, body bytes); raise ProbeFailure when nothing usable came back."""
        what = '%s %s' % (method, path)
        headers = dict(self.headers)
        data = None
        if payload is not None:
            data = json.dumps(payload).encode('utf-8')
            headers['Content-Type'] = 'application/json'
        request = Request(self.base_url + path, data=data, headers=headers, method=method)
        try:
            response = self.opener.open(request, timeout=self._timeout())
            try:
                return response.getcode(), response.read(_MAX_BODY)
            finally:
                response.close()
        except HTTPError as exc:
            # 4xx/5xx still carry a JSON error body worth reading.
            try:
                body = exc.read(_MAX_BODY)
            except Exception:  # pylint: disable=broad-except
                body = b''
            finally:
                exc.close()
            return exc.code, body
        except URLError as exc:
            # Connect-phase errors arrive wrapped; exc.reason is the socket error.
            if isinstance(exc.reason, OSError):
                raise _os_error_failure(exc.reason, what)
            raise ProbeFailure(CONNECTION_ERROR, '%s: %s' % (what, exc.reason))
        except ConnectionError as exc:
            # Includes http.client.RemoteDisconnected: the server closed the connection.
            raise _os_error_failure(exc, what)
        except http.client.HTTPException as exc:
            # Something answered, but not with HTTP we understand.
            raise ProbeFailure(BAD_RESPONSE, '%s: %s: %s' % (what, type(exc).__name__, exc))
        except OSError as exc:
            # Read-phase timeouts (socket.timeout) and other socket errors.
            raise _os_error_failure(exc, what)

    def get_json(self, path: str, method: str = 'GET', payload: Optional[dict[str, Any]] = None) -> Any:
        """Call path and return its decoded JSON; map HTTP errors to failures."""
        status, body = self.call(method, path, payload)
        if status != 200:
            raise _status_failure(status, body, path)
        try:
            return json.loads(body.decode('utf-8'))
        except ValueError:
            raise ProbeFailure(BAD_RESPONSE, '%s %s returned HTTP 200 with a body that is not JSON: %r'
                               % (method, path, body[:80]))


def _error_message(body: bytes) -> Optional[str]:
    """The message of a llama-server JSON error body, else a short raw excerpt."""
    try:
        data = json.loads(body.decode('utf-8'))
    except ValueError:
        return body[:120].decode('utf-8', 'replace').strip() or None
    if isinstance(data, dict):
        error = data.get('error')
        if isinstance(error, dict) and error.get('message'):
            return str(error['message'])
        if isinstance(error, str):
            return error
        if data.get('status'):
            return str(data['status'])
    return None


def _status_failure(status: int, body: bytes, path: str) -> ProbeFailure:
    message = _error_message(body)
    if status == 503:
        # llama-server answers 503 on every endpoint while it loads the model.
        return ProbeFailure(LOADING, message)
    if status == 401:
        # A wrong or missing API key does not fix itself: report at once.
        return ProbeFailure(UNAUTHORIZED, '%s: %s' % (path, message or 'HTTP 401'), retry=False)
    detail = '%s: %s' % (path, message) if message else path
    # 5xx, 408 and 429 may pass; a redirect or another 4xx (404: not a llama-server, or a
    # wrong path prefix) is a configuration error.
    return ProbeFailure('http_%d' % status, detail, retry=status >= 500 or status in (408, 429))


def _served_models(data: Any) -> list[str]:
    """Model names listed by GET /v1/models (OpenAI format: {"data": [{"id": ...}]}).

    llama-server lists one entry per model whose ``id`` is the first ``--alias`` (or the
    model path without one) and whose ``aliases`` holds every alias; all of them count.
    """
    if not isinstance(data, dict) or not isinstance(data.get('data'), list):
        raise ProbeFailure(BAD_RESPONSE, '/v1/models did not return an OpenAI model list')
    served = []
    for model in data['data']:
        if not isinstance(model, dict):
            continue
        names = [model.get('id')]
        if isinstance(model.get('aliases'), list):
            names.extend(model['aliases'])
        for name in names:
            if isinstance(name, str) and name and name not in served:
                served.append(name)
    return served


def _generation_stats(data: Any, latency_ms: float) -> tuple[Optional[int], Optional[float]]:
    """Tokens generated and tokens/s from a /v1/completions response.

    llama-server adds a ``timings`` object (predicted_n, predicted_per_second); other
    OpenAI-compatible servers only have ``usage``, so fall back to wall-clock latency.
    """
    choices = data.get('choices') if isinstance(data, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict) \
            or not isinstance(choices[0].get('text'), str):
        raise ProbeFailure(BAD_RESPONSE, '/v1/completions returned no choices[0].text')
    timings = data.get('timings') if isinstance(data.get('timings'), dict) else {}
    usage = data.get('usage') if isinstance(data.get('usage'), dict) else {}
    tokens = timings.get('predicted_n', usage.get('completion_tokens'))
    tokens = int(tokens) if isinstance(tokens, (int, float)) else None
    tps = timings.get('predicted_per_second')
    if isinstance(tps, (int, float)):
        tps = round(float(tps), 2)
    elif tokens and latency_ms > 0:
        tps = round(tokens / (latency_ms / 1000.0), 2)
    else:
        tps = None
    return tokens, tps


def _slot_counts(data: Any) -> tuple[int, int]:
    """(total, busy) from GET /slots: a list of slots with ``is_processing`` (current
    llama-server) or ``state`` (older builds: 0 idle, 1 processing)."""
    if not isinstance(data, list):
        raise ProbeFailure(BAD_RESPONSE, '/slots did not return a list')
    busy = 0
    for slot in data:
        if not isinstance(slot, dict):
            raise ProbeFailure(BAD_RESPONSE, '/slots entries are not objects')
        if 'is_processing' in slot:
            busy += 1 if slot['is_processing'] else 0
        elif slot.get('state'):
            busy += 1
    return len(data), busy


def _probe_once(client: _Client, endpoint: dict[str, Any], options: ProbeOptions) -> dict[str, Any]:
    """One full check of an endpoint; return the measured fields or raise ProbeFailure."""
    found: dict[str, Any] = {'models': None, 'latency_ms': None, 'tokens_per_second': None,
                             'tokens_generated': None, 'slots_total': None, 'slots_busy': None, 'detail': None}
    if options.read_build:
        found['build'] = None
    try:
        _run_checks(client, endpoint, options, found)
    except ProbeFailure as exc:
        exc.found = found
        raise
    return found


def _run_checks(client: _Client, endpoint: dict[str, Any], options: ProbeOptions, found: dict[str, Any]) -> None:
    """/health, /v1/models, then the optional generation and /slots; fills ``found``."""
    health = client.get_json('/health')
    if not isinstance(health, dict):
        raise ProbeFailure(BAD_RESPONSE, '/health did not return a JSON object')

    served = _served_models(client.get_json('/v1/models'))
    found['models'] = served
    alias = endpoint['alias']
    if alias is not None and alias not in served:
        # The server was started with another model/alias; restarting is the fix, not waiting.
        raise ProbeFailure(WRONG_MODEL, 'expected %r, served %r' % (alias, served), retry=False)

    if options.read_build:
        found['build'] = _build(client)

    if options.generate:
        payload = {
            'model': alias or (served[0] if served else ''),
            'prompt': options.prompt,
            'max_tokens': options.max_tokens,
            'temperature': 0,
            # llama-server extension: always generate max_tokens, so tokens/s is comparable.
            'ignore_eos': True,
            'stream': False,
        }
        started = time.monotonic()
        data = client.get_json('/v1/completions', method='POST', payload=payload)
        latency_ms = round((time.monotonic() - started) * 1000.0, 1)
        found['latency_ms'] = latency_ms
        found['tokens_generated'], found['tokens_per_second'] = _generation_stats(data, latency_ms)

    if options.check_slots:
        status, body = client.call('GET', '/slots')
        if status == 200:
            try:
                slots = json.loads(body.decode('utf-8'))
            except ValueError:
                raise ProbeFailure(BAD_RESPONSE, '/slots returned a body that is not JSON')
            found['slots_total'], found['slots_busy'] = _slot_counts(slots)
        elif status in (404, 501):
            # Slots monitoring is switched off (--no-slots); that is not a health problem.
            found['detail'] = '/slots not available (HTTP %d): %s' % (status, _error_message(body))
        else:
            raise _status_failure(status, body, '/slots')


def _build(client: _Client) -> Optional[str]:
    """The build llama-server reports in /props ("b6000-1a2b3c4"), or None when it reports
    none (an older server, or /props switched off): a version is informative, not a health check."""
    status, body = client.call('GET', '/props')
    if status != 200:
        return None
    try:
        props = json.loads(body.decode('utf-8'))
    except ValueError:
        return None
    build = props.get('build_info') if isinstance(props, dict) else None
    return build if isinstance(build, str) and build else None


def _new_result(endpoint: dict[str, Any]) -> dict[str, Any]:
    return {
        'name': endpoint['name'],
        'url': endpoint['url'],
        'alias': endpoint['alias'],
        'healthy': False,
        'status': 'error',
        'reason': None,
        'detail': None,
        'models': None,
        'latency_ms': None,
        'tokens_per_second': None,
        'tokens_generated': None,
        'slots_total': None,
        'slots_busy': None,
        'elapsed_s': 0.0,
        'attempts': 0,
    }


def probe_endpoint(endpoint: dict[str, Any], options: ProbeOptions, timeout: float,
                   sleep: Callable[[float], None] = time.sleep, deadline: Optional[float] = None) -> dict[str, Any]:
    """Probe one normalized endpoint until it is healthy or ``timeout`` seconds pass (or
    until ``deadline``, a time.monotonic() value, when given: the deadline of a whole probe).

    Transient failures (refused, timeout, loading, 5xx) are retried every
    ``options.interval`` seconds; permanent ones (unauthorized, wrong_model, 3xx/4xx,
    TLS) end the probe at once. An endpoint whose turn comes at or after the deadline gets
    one attempt. Returns the result dict.
    """
    started = time.monotonic()
    if deadline is None:
        deadline = started + float(timeout)
    result = _new_result(endpoint)
    client = _Client(endpoint['url'], endpoint['api_key'] or options.api_key, options, deadline)
    failure: Optional[ProbeFailure] = None
    while True:
        result['attempts'] += 1
        try:
            found = _probe_once(client, endpoint, options)
        except ProbeFailure as exc:
            failure = exc
        else:
            failure = None
            result.update(found)
            break
        remaining = deadline - time.monotonic()
        if not failure.retry or remaining <= 0:
            break
        # The sleep may end at the deadline: one last attempt is made there.
        sleep(min(options.interval, remaining))
    result['elapsed_s'] = round(time.monotonic() - started, 3)
    if failure is None:
        result.update(healthy=True, status='ok')
        return result
    # Keep what the last attempt learnt (e.g. the served models) for the report.
    result.update(failure.found)
    result['reason'] = failure.reason
    result['detail'] = failure.detail
    if failure.reason == LOADING:
        result['status'] = 'loading'
        result['detail'] = 'still loading after %.1f s%s' % (
            result['elapsed_s'], ' (%s)' % failure.detail if failure.detail else '')
    elif failure.reason in _UNREACHABLE:
        result['status'] = 'unreachable'
    return result


def probe_endpoints(endpoints: list[dict[str, Any]], options: ProbeOptions, timeout: float,
                    sleep: Callable[[float], None] = time.sleep) -> list[dict[str, Any]]:
    """Probe normalized endpoints concurrently (one thread each, up to 256), so the run
    takes about as long as the slowest endpoint. Every endpoint is judged against one
    deadline, ``timeout`` seconds from this call. Results keep the input order."""
    if not endpoints:
        return []
    deadline = time.monotonic() + float(timeout)
    workers = min(len(endpoints), _MAX_WORKERS)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(probe_endpoint, endpoint, options, timeout, sleep, deadline)
                   for endpoint in endpoints]
        return [future.result() for future in futures]
