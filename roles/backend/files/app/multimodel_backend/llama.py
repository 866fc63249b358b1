"""Calls to llama-server's OpenAI-compatible chat API, with round-robin and failover.

Each query goes to the next instance of its tier in turn (round-robin, per worker
process). When that instance is refused, times out, answers 5xx (503 while it loads its
model) or answers garbage, the same query goes to the tier's next instance; only when
every instance failed does the caller get TierUnavailable. 4xx answers (a wrong API key,
a prompt too long for the context) would fail the same way everywhere: no failover.
"""

import json
import logging
from collections.abc import AsyncGenerator

import httpx

from .config import Instance, Settings
from .metrics import Metrics

Messages = list[dict[str, str]]  # chat messages: [{"role", "content"}]

log = logging.getLogger(__name__)


class UpstreamError(Exception):
    """One instance failed. kind labels the metric; failover says whether to try the next."""

    def __init__(self, instance: Instance, kind: str, reason: str, failover: bool = True) -> None:
        super().__init__(f"{instance.name}: {reason}")
        self.instance, self.kind, self.reason, self.failover = instance, kind, reason, failover


class TierUnavailable(Exception):
    def __init__(self, tier: str, failures: list[UpstreamError]) -> None:
        self.tier = tier
        self.tried = [f.instance.name for f in failures]
        detail = "; ".join(f"{f.instance.name} ({f.reason})" for f in failures)
        super().__init__(f"every instance of tier '{tier}' failed: {detail}")


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
    return UpstreamError(instance, kind, reason, failover=response.status_code >= 500)


def _transport_error(instance: Instance, exc: httpx.HTTPError) -> UpstreamError:
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamError(instance, "timeout", f"timed out ({type(exc).__name__})")
    if isinstance(exc, httpx.ConnectError):
        return UpstreamError(instance, "connect", f"connection failed: {exc}")
    return UpstreamError(instance, "transport", f"{type(exc).__name__}: {exc}")


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

    def _body(self, instance: Instance, messages: Messages, max_tokens: int, stream: bool) -> dict:
        body = {"messages": messages, "max_tokens": max_tokens, "stream": stream}
        if instance.alias:
            body["model"] = instance.alias  # selects the model on a router-mode server
        return body

    def _failed(self, tier: str, error: UpstreamError, failures: list[UpstreamError]) -> None:
        self.metrics.upstream_errors.labels(error.instance.name, error.kind).inc()
        log.warning("tier %s: instance %s failed: %s", tier, error.instance.name, error.reason)
        if not error.failover:
            raise error
        failures.append(error)

    async def chat(self, tier: str, messages: Messages, max_tokens: int) -> tuple[str, Instance]:
        """Return (answer text, instance) from the first instance of the tier that answers."""
        failures: list[UpstreamError] = []
        for instance in self.candidates(tier):
            if failures:
                self.metrics.failovers.labels(tier, failures[-1].instance.name).inc()
            try:
                return await self._chat_once(instance, messages, max_tokens), instance
            except UpstreamError as error:
                self._failed(tier, error, failures)
        raise TierUnavailable(tier, failures)

    async def _chat_once(self, instance: Instance, messages: Messages, max_tokens: int) -> str:
        body = self._body(instance, messages, max_tokens, False)
        try:
            response = await self.client.post(f"{instance.url}/v1/chat/completions", headers=self.headers, json=body)
        except httpx.HTTPError as exc:
            raise _transport_error(instance, exc) from None
        if response.status_code != 200:
            raise _http_error(instance, response)
        try:
            return response.json()["choices"][0]["message"]["content"] or ""
        except (ValueError, KeyError, IndexError, TypeError):
            raise UpstreamError(instance, "invalid", "answer is not a chat completion") from None

    async def stream(self, tier: str, messages: Messages, max_tokens: int) -> AsyncGenerator[tuple[Instance, str], None]:
        """Yield (instance, text) pieces as llama-server generates them (SSE); the first
        piece of an instance that accepted the query is "" (so the caller knows which one
        answers even when the model generates nothing).

        Failover happens only before the first text: once text has been sent to the
        client it cannot be taken back, so a failure mid-answer raises UpstreamError."""
        failures: list[UpstreamError] = []
        for instance in self.candidates(tier):
            if failures:
                self.metrics.failovers.labels(tier, failures[-1].instance.name).inc()
            started = False
            try:
                async for text in self._stream_once(instance, messages, max_tokens):
                    started = started or bool(text)
                    yield instance, text
                return
            except UpstreamError as error:
                if started:
                    error.failover = False
                self._failed(tier, error, failures)
        raise TierUnavailable(tier, failures)

    async def _stream_once(self, instance: Instance, messages: Messages, max_tokens: int) -> AsyncGenerator[str, None]:
        body = self._body(instance, messages, max_tokens, True)
        try:
            async with self.client.stream("POST", f"{instance.url}/v1/chat/completions", headers=self.headers,
                                          json=body) as response:
                if response.status_code != 200:
                    await response.aread()
                    raise _http_error(instance, response)
                yield ""
                async for line in response.aiter_lines():
                    for text in _sse_texts(instance, line):
                        yield text
                    if line.strip() == "data: [DONE]":
                        return
        except httpx.HTTPError as exc:
            raise _transport_error(instance, exc) from None
        # The stream ended without [DONE]: the server went away mid-answer.
        raise UpstreamError(instance, "stream", "stream ended before [DONE]")

    async def health(self, instance: Instance) -> str:
        """'ok' when llama-server's /health answers 200, else why not."""
        try:
            response = await self.client.get(f"{instance.url}/health", headers=self.headers, timeout=5.0)
        except httpx.HTTPError as exc:
            return _transport_error(instance, exc).reason
        return "ok" if response.status_code == 200 else f"HTTP {response.status_code}: {_error_message(response)}"


def _sse_texts(instance: Instance, line: str) -> list[str]:
    """Text pieces in one SSE line of a chat completion stream."""
    if line.startswith("error:"):  # llama-server reports errors mid-stream this way
        raise UpstreamError(instance, "stream", f"stream error: {line[6:].strip()[:200]}")
    if not line.startswith("data:") or line[5:].strip() == "[DONE]":
        return []
    try:
        chunk = json.loads(line[5:])
    except ValueError:
        raise UpstreamError(instance, "invalid", "stream chunk is not JSON") from None
    if "error" in chunk:
        message = chunk["error"].get("message") if isinstance(chunk["error"], dict) else chunk["error"]
        raise UpstreamError(instance, "stream", f"stream error: {message}")
    texts = []
    for choice in chunk.get("choices") or []:
        content = (choice.get("delta") or {}).get("content")
        if content:
            texts.append(content)
    return texts
