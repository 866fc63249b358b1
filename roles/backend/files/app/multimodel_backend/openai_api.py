"""The OpenAI-compatible API: GET /v1/models and POST /v1/chat/completions.

What clients written for OpenAI (the `openai` SDK, LangChain, Open WebUI, curl scripts
for llama-server) speak. A "model" is a tier: "simple", "moderate", "complex", or "auto"
(routing.py on the last user message). Round-robin, failover, the deadline, the answer
cache and the tier limits are the ones of /api/query (service.py). Every error is in
OpenAI's shape: {"error": {"message", "type", "param", "code"}}.
"""

import json
import math
import time
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from .config import LEVELS
from .limits import Busy, TooManyTokens
from .llama import Completion, Delta, Messages, Params, TierUnavailable, UpstreamError, UpstreamTimeout
from .routing import classify
from .service import Backend, ClientDisconnected, until_disconnected

MODELS = (*LEVELS, "auto")
ROLES = ("system", "user", "assistant")
MAX_STOP = 4
OWNER = "multimodel"
CREATED = int(time.time())  # of the model list: when this process started

router = APIRouter()


def openai_error(status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    """An error response in OpenAI's shape."""
    return JSONResponse(_error_body(message, type_, param, code), status_code=status, headers=headers)


def _error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


class BadRequest(Exception):
    def __init__(self, message: str, param: str | None = None, status: int = 400, code: str | None = None) -> None:
        super().__init__(message)
        self.message, self.param, self.status, self.code = message, param, status, code


@dataclass(frozen=True)
class ChatRequest:
    model: str
    messages: Messages
    params: Params
    stream: bool
    include_usage: bool


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(body: dict[str, Any], name: str, low: float, high: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if not (_is_int(value) or isinstance(value, float)) or not math.isfinite(value) or not low <= value <= high:
        raise BadRequest(f"'{name}' must be a number from {low:g} to {high:g}, got {json.dumps(value)}", name)
    return float(value)


def _content(message: dict[str, Any], where: str) -> str:
    """A message's content as text: a string, or a list of text parts (joined by newlines)."""
    content = message.get("content")
    if content is None and message.get("role") == "assistant":
        return ""  # an assistant turn that only called tools
    if isinstance(content, str):
        return content
    if isinstance(content, list) and content:
        texts = []
        for number, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise BadRequest('only text content parts (type "text") are supported',
                                 f"{where}.content[{number}]")
            texts.append(part["text"])
        return "\n".join(texts)
    raise BadRequest("'content' must be a string or a list of text parts", f"{where}.content")


def _messages(value: Any) -> Messages:
    if not isinstance(value, list) or not value:
        raise BadRequest("'messages' must be a non-empty list of messages", "messages")
    messages = []
    for number, message in enumerate(value):
        where = f"messages[{number}]"
        if not isinstance(message, dict):
            raise BadRequest("each message must be an object with 'role' and 'content'", where)
        if message.get("role") not in ROLES:
            raise BadRequest(f"'role' must be one of {', '.join(ROLES)}, got {json.dumps(message.get('role'))}",
                             f"{where}.role")
        messages.append({"role": message["role"], "content": _content(message, where)})
    return messages


def _stop(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and len(value) <= MAX_STOP and all(isinstance(s, str) for s in value):
        return tuple(value)
    raise BadRequest(f"'stop' must be a string or a list of at most {MAX_STOP} strings", "stop")


def _max_tokens(body: dict[str, Any], default: int) -> int:
    for name in ("max_completion_tokens", "max_tokens"):  # the newer name wins
        value = body.get(name)
        if value is None:
            continue
        if not _is_int(value) or value < 1:
            raise BadRequest(f"'{name}' must be a whole number >= 1, got {json.dumps(value)}", name)
        return value
    return default


def _flag(body: dict[str, Any], name: str, where: str | None = None) -> bool:
    value = body.get(name)
    if value is not None and not isinstance(value, bool):
        raise BadRequest(f"'{name}' must be a boolean", where or name)
    return bool(value)


def parse_chat_request(raw: bytes, default_max_tokens: int) -> ChatRequest:
    """The request's known fields, type-checked; unknown ones are ignored (clients send extras)."""
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str):
        raise BadRequest("'model' is required: one of " + ", ".join(MODELS), "model")
    if model not in MODELS:
        raise BadRequest(f"The model '{model}' does not exist: use one of {', '.join(MODELS)}", "model",
                         status=404, code="model_not_found")
    messages = _messages(body.get("messages"))
    n = body.get("n")
    if n is not None and (not _is_int(n) or n != 1):
        raise BadRequest("only 'n': 1 is supported", "n")
    params = Params(max_tokens=_max_tokens(body, default_max_tokens),
                    temperature=_number(body, "temperature", 0, 2), top_p=_number(body, "top_p", 0, 1),
                    stop=_stop(body.get("stop")))
    stream = _flag(body, "stream")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise BadRequest("'stream_options' must be an object", "stream_options")
    include_usage = _flag(options or {}, "include_usage", "stream_options.include_usage")
    return ChatRequest(model, messages, params, stream, include_usage)


def _tier(chat: ChatRequest) -> str:
    if chat.model != "auto":
        return chat.model
    users = [m["content"] for m in chat.messages if m["role"] == "user"]
    return classify(users[-1] if users else chat.messages[-1]["content"])


def _failure(exc: Exception) -> tuple[int, dict[str, Any], dict[str, str]]:
    """(status, OpenAI error body, headers) of a failed generation."""
    if isinstance(exc, Busy):
        return 429, _error_body(str(exc), "rate_limit_error", None, "rate_limit_exceeded"), \
            {"Retry-After": str(exc.retry_after)}
    if isinstance(exc, TierUnavailable):
        return 503, _error_body(str(exc), "server_error", None, "tier_unavailable"), {}
    if isinstance(exc, UpstreamTimeout):
        return 504, _error_body(f"instance {exc.instance.name} timed out: {exc.reason}", "server_error", None,
                                "upstream_timeout"), {}
    assert isinstance(exc, UpstreamError)
    return 502, _error_body(f"instance {exc.instance.name} failed: {exc.reason}", "server_error", None,
                            "upstream_error"), {}


FAILURES = (Busy, TierUnavailable, UpstreamError)


@router.get("/v1/models")
async def list_models() -> dict[str, Any]:
    return {"object": "list",
            "data": [{"id": name, "object": "model", "created": CREATED, "owned_by": OWNER} for name in MODELS]}


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(request: Request) -> Response:
    backend: Backend = request.app.state.backend
    try:
        chat = parse_chat_request(await request.body(), backend.settings.max_tokens)
        tier = _tier(chat)
        backend.check_max_tokens(tier, chat.params.max_tokens)
    except BadRequest as exc:
        return openai_error(exc.status, exc.message, param=exc.param, code=exc.code)
    except TooManyTokens as exc:
        return openai_error(400, str(exc), param="max_tokens", code="invalid_value")
    call = Call(backend, chat, tier)
    try:
        if chat.stream:
            return await until_disconnected(request.receive, call.open_stream())
        return JSONResponse(await until_disconnected(request.receive, call.complete()))
    except ClientDisconnected:
        return Response(status_code=499)  # nobody reads it: the client is gone (nginx's "client closed request")
    except FAILURES as exc:
        status, body, headers = _failure(exc)
        return JSONResponse(body, status_code=status, headers=headers)


class Call:
    """One chat completion: cache, then a generation on a miss."""

    def __init__(self, backend: Backend, chat: ChatRequest, tier: str) -> None:
        self.backend, self.chat, self.tier = backend, chat, tier
        self.id = "chatcmpl-" + uuid.uuid4().hex
        self.created = int(time.time())
        self.start = time.perf_counter()
        p = chat.params
        self.key = backend.cache.key("chat", [tier, backend.models(tier), chat.messages, p.max_tokens,
                                              p.temperature, p.top_p, list(p.stop)])

    def _observe(self, cached: bool) -> None:
        self.backend.metrics.query_latency.labels(self.tier, str(cached).lower()).observe(
            time.perf_counter() - self.start)

    async def _cached(self) -> dict[str, Any] | None:
        entry = await self.backend.cache.get(self.key)
        return entry if entry is not None and isinstance(entry.get("answer"), str) else None

    def _store(self, completion: Completion) -> None:
        self.backend.cache.set(self.key, {"answer": completion.text, "instance": completion.instance.name,
                                          "finish_reason": completion.finish_reason, "usage": completion.usage})

    async def complete(self) -> dict[str, Any]:
        """The chat.completion object (not streamed)."""
        entry = await self._cached()
        if entry is not None:
            self._observe(True)
        else:
            completion = await self.backend.generate(self.tier, self.chat.messages, self.chat.params)
            self._store(completion)
            self._observe(False)
            entry = {"answer": completion.text, "finish_reason": completion.finish_reason, "usage": completion.usage}
        reply: dict[str, Any] = {
            "id": self.id, "object": "chat.completion", "created": self.created, "model": self.tier,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": entry["answer"]},
                         "logprobs": None, "finish_reason": entry.get("finish_reason") or "stop"}],
        }
        if entry.get("usage"):
            reply["usage"] = entry["usage"]
        return reply

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> str:
        return _event({"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.tier,
                       "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]})

    def _usage_chunk(self, usage: dict[str, int] | None) -> str:
        return _event({"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.tier,
                       "choices": [], "usage": usage})

    async def open_stream(self) -> "EventStream":
        """The SSE response, once the answer is known to come: a cache hit, or an instance
        took the query (failures before that are still a status code)."""
        entry = await self._cached()
        if entry is not None:
            self._observe(True)
            return EventStream(self._replay(entry))
        deltas = self.backend.stream(self.tier, self.chat.messages, self.chat.params)
        try:
            first = await anext(deltas)
        except BaseException:
            await deltas.aclose()
            raise
        return EventStream(self._relay(first, deltas))

    async def _replay(self, entry: dict[str, Any]) -> AsyncGenerator[str, None]:
        yield self._chunk({"role": "assistant", "content": ""})
        if entry["answer"]:
            yield self._chunk({"content": entry["answer"]})
        yield self._chunk({}, entry.get("finish_reason") or "stop")
        if self.chat.include_usage:
            yield self._usage_chunk(entry.get("usage"))
        yield "data: [DONE]\n\n"

    async def _relay(self, first: Delta, deltas: AsyncGenerator[Delta, None]) -> AsyncGenerator[str, None]:
        pieces: list[str] = []
        finish_reason, usage = None, None
        try:
            yield self._chunk({"role": "assistant", "content": ""})
            async for delta in deltas:
                if delta.text:
                    pieces.append(delta.text)
                    yield self._chunk({"content": delta.text})
                finish_reason = delta.finish_reason or finish_reason
                usage = delta.usage or usage
        except FAILURES as exc:
            # The status is sent: the error goes in the stream, which ends without [DONE].
            yield _event(_failure(exc)[1])
            return
        finally:
            await deltas.aclose()
        self._store(Completion("".join(pieces), first.instance, finish_reason, usage))
        self._observe(False)
        yield self._chunk({}, finish_reason or "stop")
        if self.chat.include_usage:
            yield self._usage_chunk(usage)
        yield "data: [DONE]\n\n"


def _event(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


class EventStream(StreamingResponse):
    """A text/event-stream response that stops (and closes its source: the upstream request
    and the tier slot) as soon as the client disconnects."""

    def __init__(self, events: AsyncGenerator[str, None]) -> None:
        super().__init__(events, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.events = events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def pump() -> None:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            async for event in self.events:
                await send({"type": "http.response.body", "body": event.encode("utf-8"), "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        try:
            await until_disconnected(receive, pump())
        except ClientDisconnected:
            pass
        finally:
            await self.events.aclose()
