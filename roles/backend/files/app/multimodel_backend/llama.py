"""Calls to llama-server's OpenAI-compatible chat API, with round-robin and failover.

Each query goes to the next instance of its tier in turn (round-robin, per worker
process). It moves to the tier's next instance only when the query cannot be running on
this one: the connection failed (refused, connect or pool timeout), the instance closed the
connection without sending a byte of an answer (it was killed, or it closed an idle pooled
connection as it was reused: either way nothing runs there for this query, llama-server
stops a request whose connection is gone), or it answered 5xx (503 while it loads its
model) before the first byte of an answer.
Every other failure after the request was sent ends the query (UpstreamError, 502): the
generation may be running there, and replaying it would run it twice. A read timeout is
UpstreamTimeout (504), not failed over either: a slow generation would run on every replica.

When every instance of the tier failed that way (a restart or roll-out of a tier with one
instance, or of all of them), the query waits for the tier: it tries the tier again every
TIER_RETRY_INTERVAL seconds for up to MMO_TIER_WAIT seconds, then answers 503.

One deadline (MMO_REQUEST_TIMEOUT) covers the whole query, every attempt and wait included.
"""

import asyncio
import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

from .config import Instance, Settings
from .metrics import Metrics

Messages = list[dict[str, str]]  # chat messages: [{"role", "content"}]

CONNECT_TIMEOUT = 5.0  # a dead instance fails over in seconds, not after the whole deadline
TIER_RETRY_INTERVAL = 0.5  # between two rounds over a tier whose every instance failed over
USAGE_FIELDS = ("prompt_tokens", "completion_tokens", "total_tokens")

log = logging.getLogger(__name__)


class UpstreamError(Exception):
    """One instance failed. kind labels the metric; failover says whether to try the next."""

    def __init__(self, instance: Instance, kind: str, reason: str, failover: bool = False) -> None:
        super().__init__(f"{instance.name}: {reason}")
        self.instance, self.kind, self.reason, self.failover = instance, kind, reason, failover


class UpstreamTimeout(UpstreamError):
    """The instance did not answer in time, or the query's deadline is spent: 504, no failover."""

    def __init__(self, instance: Instance, reason: str) -> None:
        super().__init__(instance, "timeout", reason, failover=False)


class TierUnavailable(Exception):
    def __init__(self, tier: str, failures: list[UpstreamError]) -> None:
        self.tier = tier
        last = {f.instance.name: f for f in failures}  # each instance once, its last failure
        self.tried = list(last)
        detail = "; ".join(f"{f.instance.name} ({f.reason})" for f in last.values())
        super().__init__(f"every instance of tier '{tier}' failed: {detail}")


@dataclass(frozen=True)
class Params:
    """What the caller asks of a generation, passed through to llama-server."""

    max_tokens: int
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()


@dataclass
class Completion:
    """A whole answer: its text, who generated it, why it ended and llama-server's token counts."""

    text: str
    instance: Instance
    finish_reason: str | None = None
    usage: dict[str, int] | None = None


@dataclass(frozen=True)
class Delta:
    """One piece of a streamed answer. The first names the instance (text ""); the last ones
    may carry finish_reason and usage."""

    instance: Instance
    text: str = ""
    finish_reason: str | None = None
    usage: dict[str, int] | None = None


def _error_message(response: httpx.Response) -> str:
    """llama-server errors look like {"error": {"message", "type", "code"}}."""
    try:
        body = response.json()
        return str(body["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return response.text[:200].strip() or response.reason_phrase


def _http_error(instance: Instance, response: httpx.Response) -> UpstreamError:
    reason = f"HTTP {response.status_code}: {_error_message(response)}"
    kind = "http_5xx" if response.status_code >= 500 else "http_4xx"
    # A 5xx comes before any answer (503 while loading, 500 when it cannot run it): safe to
    # replay. A 4xx would fail the same way everywhere (a wrong key, a prompt too long).
    return UpstreamError(instance, kind, reason, failover=response.status_code >= 500)


def _transport_error(instance: Instance, exc: httpx.HTTPError, answered: bool = True) -> UpstreamError:
    """The error of a failed call; ``answered`` once the response's status line was read.

    A connection closed or reset before the status line (RemoteProtocolError "disconnected
    without sending a response", ReadError, WriteError) fails over: nothing runs there for
    this query any more. A read timeout is not one of them (TimeoutException: 504)."""
    if not answered and isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)):
        return UpstreamError(instance, "connect", f"connection closed before an answer "
                             f"({type(exc).__name__}: {exc or 'reset'})", failover=True)
    if isinstance(exc, (httpx.ConnectTimeout, httpx.PoolTimeout)):
        return UpstreamError(instance, "connect", f"connection timed out ({type(exc).__name__})", failover=True)
    if isinstance(exc, httpx.ConnectError):
        return UpstreamError(instance, "connect", f"connection failed: {exc}", failover=True)
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamTimeout(instance, f"timed out ({type(exc).__name__})")
    return UpstreamError(instance, "transport", f"{type(exc).__name__}: {exc}")


def _usage(value: Any) -> dict[str, int] | None:
    """The token counts of a usage object, None when there is none (or it is not one)."""
    if not isinstance(value, dict):
        return None
    counts = {k: value[k] for k in USAGE_FIELDS if isinstance(value.get(k), int) and not isinstance(value[k], bool)}
    return counts if len(counts) == len(USAGE_FIELDS) else None


def _finish_reason(value: Any) -> str | None:
    return value if isinstance(value, str) else None


class Deadline:
    """The one deadline of a query, over every attempt."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds

    def expired(self, instance: Instance) -> UpstreamTimeout:
        return UpstreamTimeout(instance, f"no answer within the query's deadline ({self.seconds:g} s)")

    def left(self, instance: Instance) -> float:
        """Seconds left; UpstreamTimeout when none are."""
        left = self.at - time.monotonic()
        if left <= 0:
            raise self.expired(instance)
        return left

    def timeout(self, instance: Instance) -> httpx.Timeout:
        left = self.left(instance)
        return httpx.Timeout(left, connect=min(CONNECT_TIMEOUT, left), pool=min(CONNECT_TIMEOUT, left))


class Attempts:
    """The instances one query may try (round-robin order), its deadline, what failed so far."""

    def __init__(self, pool: "LlamaPool", tier: str) -> None:
        self.pool, self.tier = pool, tier
        self.deadline = Deadline(pool.settings.request_timeout)
        self.failures: list[UpstreamError] = []

    async def __aiter__(self) -> AsyncIterator[Instance]:
        wait_until = time.monotonic() + self.pool.settings.tier_wait
        while True:
            for instance in self.pool.candidates(self.tier):
                if self.failures:
                    self.pool.metrics.failovers.labels(self.tier, self.failures[-1].instance.name).inc()
                yield instance
            # Every instance failed over: nothing runs anywhere for this query yet.
            if time.monotonic() + TIER_RETRY_INTERVAL >= min(wait_until, self.deadline.at):
                return
            if len(self.failures) == len(self.pool.settings.tier(self.tier)):  # once per query
                log.warning("tier %s: every instance failed; trying again for up to %g s", self.tier,
                            self.pool.settings.tier_wait)
            await asyncio.sleep(TIER_RETRY_INTERVAL)

    def failed(self, error: UpstreamError) -> None:
        """Count the failure; re-raise it unless the query may move to the next instance."""
        self.pool.metrics.upstream_errors.labels(error.instance.name, error.kind).inc()
        log.warning("tier %s: instance %s failed: %s", self.tier, error.instance.name, error.reason)
        if not error.failover:
            raise error
        self.failures.append(error)

    def unavailable(self) -> TierUnavailable:
        return TierUnavailable(self.tier, self.failures)


class LlamaPool:
    def __init__(self, settings: Settings, client: httpx.AsyncClient, metrics: Metrics) -> None:
        self.settings = settings
        self.client = client
        self.metrics = metrics
        self._next: dict[str, int] = {}  # tier -> index of the instance that takes the next query
        self.headers: dict[str, str] = {}
        if settings.llama_api_key:
            self.headers["Authorization"] = f"Bearer {settings.llama_api_key}"

    def candidates(self, tier: str) -> list[Instance]:
        """The tier's instances, starting with this query's round-robin turn."""
        instances = self.settings.tier(tier)
        start = self._next.get(tier, 0) % len(instances)
        self._next[tier] = start + 1
        return instances[start:] + instances[:start]

    def _body(self, instance: Instance, messages: Messages, params: Params, stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {"messages": messages, "max_tokens": params.max_tokens, "stream": stream}
        if stream:
            body["stream_options"] = {"include_usage": True}  # llama-server sends usage only when asked
        if instance.alias:
            body["model"] = instance.alias  # selects the model on a router-mode server
        for name in ("temperature", "top_p"):
            if getattr(params, name) is not None:
                body[name] = getattr(params, name)
        if params.stop:
            body["stop"] = list(params.stop)
        return body

    async def chat(self, tier: str, messages: Messages, params: Params) -> Completion:
        """The whole answer of the first instance of the tier that takes the query."""
        attempts = Attempts(self, tier)
        async for instance in attempts:
            try:
                return await self._chat_once(instance, messages, params, attempts.deadline)
            except UpstreamError as error:
                attempts.failed(error)
        raise attempts.unavailable()

    async def _chat_once(self, instance: Instance, messages: Messages, params: Params,
                         deadline: Deadline) -> Completion:
        body = self._body(instance, messages, params, False)
        url = f"{instance.url}/v1/chat/completions"
        answered = False  # whether the status line came: what a failed call may fail over on
        try:
            async with asyncio.timeout(deadline.left(instance)):
                async with self.client.stream("POST", url, headers=self.headers, json=body,
                                              timeout=deadline.timeout(instance)) as response:
                    answered = True
                    await response.aread()
        except TimeoutError:
            raise deadline.expired(instance) from None
        except httpx.HTTPError as exc:
            raise _transport_error(instance, exc, answered) from None
        if response.status_code != 200:
            raise _http_error(instance, response)
        try:
            answer = response.json()
            choice = answer["choices"][0]
            content = choice["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise UpstreamError(instance, "invalid", "answer is not a chat completion") from None
        if content is not None and not isinstance(content, str):
            raise UpstreamError(instance, "invalid", "answer is not a chat completion (content is not text)")
        return Completion(content or "", instance, _finish_reason(choice.get("finish_reason")),
                          _usage(answer.get("usage")))

    async def stream(self, tier: str, messages: Messages, params: Params) -> AsyncGenerator[Delta, None]:
        """Deltas as llama-server generates them (SSE). The first names the instance that
        took the query (text ""), so the caller knows who answers even when the model
        generates nothing. Close it (aclosing) to close the upstream request."""
        attempts = Attempts(self, tier)
        async for instance in attempts:
            try:
                async for delta in self._stream_once(instance, messages, params, attempts.deadline):
                    yield delta
                return
            except UpstreamError as error:
                attempts.failed(error)
        raise attempts.unavailable()

    async def _stream_once(self, instance: Instance, messages: Messages, params: Params,
                           deadline: Deadline) -> AsyncGenerator[Delta, None]:
        body = self._body(instance, messages, params, True)
        answered = False  # whether the status line came: what a failed call may fail over on
        try:
            async with self.client.stream("POST", f"{instance.url}/v1/chat/completions", headers=self.headers,
                                          json=body, timeout=deadline.timeout(instance)) as response:
                answered = True
                if response.status_code != 200:
                    await response.aread()
                    raise _http_error(instance, response)
                # From here on the query runs there: no failover, whatever happens.
                yield Delta(instance)
                lines = response.aiter_lines()
                while True:
                    try:
                        async with asyncio.timeout(deadline.left(instance)):
                            line = await anext(lines)
                    except StopAsyncIteration:
                        break
                    except TimeoutError:
                        raise deadline.expired(instance) from None
                    if line.strip() == "data: [DONE]":
                        return
                    for delta in _sse_deltas(instance, line):
                        yield delta
        except httpx.HTTPError as exc:  # only a connection error (before the 200) fails over
            raise _transport_error(instance, exc, answered) from None
        # The stream ended without [DONE]: the server went away mid-answer.
        raise UpstreamError(instance, "stream", "stream ended before [DONE]")

    async def health(self, instance: Instance) -> str:
        """'ok' when llama-server's /health answers 200, else why not."""
        try:
            response = await self.client.get(f"{instance.url}/health", headers=self.headers, timeout=5.0)
        except httpx.HTTPError as exc:
            return _transport_error(instance, exc).reason
        return "ok" if response.status_code == 200 else f"HTTP {response.status_code}: {_error_message(response)}"


def _invalid(instance: Instance, what: str) -> UpstreamError:
    return UpstreamError(instance, "invalid", f"malformed stream chunk: {what}")


def _sse_deltas(instance: Instance, line: str) -> list[Delta]:
    """The deltas in one SSE line of a chat completion stream; UpstreamError for an error
    event or a chunk that is not a chat completion chunk."""
    if line.startswith("error:"):  # llama-server reports errors mid-stream this way
        raise UpstreamError(instance, "stream", f"stream error: {line[6:].strip()[:200]}")
    if not line.startswith("data:"):
        return []  # blank separators, comments, event:/id: fields
    try:
        chunk = json.loads(line[5:])
    except ValueError:
        raise _invalid(instance, "not JSON") from None
    if not isinstance(chunk, dict):
        raise _invalid(instance, "not a JSON object")
    if "error" in chunk:
        error = chunk["error"]
        message = error.get("message") if isinstance(error, dict) else error
        raise UpstreamError(instance, "stream", f"stream error: {str(message)[:200]}")
    choices = chunk.get("choices") or []
    if not isinstance(choices, list):
        raise _invalid(instance, "'choices' is not a list")
    deltas = []
    for choice in choices:
        if not isinstance(choice, dict):
            raise _invalid(instance, "a choice is not an object")
        delta = {} if choice.get("delta") is None else choice["delta"]
        if not isinstance(delta, dict):
            raise _invalid(instance, "'delta' is not an object")
        content = delta.get("content")
        if content is not None and not isinstance(content, str):
            raise _invalid(instance, "'content' is not text")
        finish = _finish_reason(choice.get("finish_reason"))
        if content or finish:
            deltas.append(Delta(instance, content or "", finish))
    usage = _usage(chunk.get("usage"))
    if usage:
        deltas.append(Delta(instance, usage=usage))
    return deltas
