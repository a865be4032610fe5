"""A mock LLM provider speaking the OpenAI chat-completions protocol: offline, deterministic, realistic.

Point the official ``openai`` SDK (or the gateway) at ``<url>/v1``::

    python -m routewise.dev.mock_provider --port 8090 --seed 7      # a process
    with MockProvider(seed=7) as mock:                               # a thread, for tests and benches
        AsyncOpenAI(base_url=mock.openai_base_url, api_key="any")

``POST /v1/chat/completions`` (plain and streamed), ``GET /v1/models`` and ``GET /v1/models/{id}``.

**Usage, the rules.** The answer depends only on the seed and the request's JSON (without
``stream`` and ``stream_options``, so a streamed and a plain call of one request agree):

- ``prompt_tokens``: the project's tokenizer (``routewise.runtime.tokens.count_tokens``, the cost
  predictor's rule) over the messages' roles and text (text parts of a list content joined by
  ``\\n``; other parts are not counted), with o200k — cl100k for GPT-4 and GPT-3.5 names.
- ``completion_tokens``: a log-normal draw (median ``output_median``, spread ``output_sigma``) capped at
  ``max_completion_tokens`` or ``max_tokens`` (``default_max_tokens`` when neither is sent);
  exactly that cap with ``full_length`` (``--full-length``, or per request the header
  ``X-Mock-Full-Length: 1``). The answer text has exactly that many tokens (counted by the same
  tokenizer); ``finish_reason`` is ``length`` when the cap was reached, ``stop`` otherwise.
- ``prompt_tokens_details.cached_tokens``: for a prompt of at least 1,024 tokens, a seeded share
  between 50 % and 100 % of it, rounded down to a multiple of 128 (OpenAI caches in 128-token
  steps from 1,024), when that is at least 1,024; 0 otherwise.

**Latency.** A plain answer takes ``latency_ms + per_token_ms * completion_tokens``; a stream sends
its first chunk after ``ttft_ms`` (default ``latency_ms``), then ``chunk_tokens`` tokens per chunk,
each after ``per_token_ms`` per token. Streams end with a ``finish_reason`` chunk, with
``stream_options.include_usage`` a chunk with ``usage`` and no choices (as OpenAI does), then
``data: [DONE]``.

**Errors.** A seeded share of calls fails: ``rate_limit_rate`` with 429 (``retry-after``), then
``error_rate`` with 500 (one random stream of draws, seeded, in the order calls arrive). Bad input
is a 400 and, when an ``api_key`` is configured, a call without ``Authorization: Bearer <it>`` a
401 (any key, or none, is accepted otherwise); every error has OpenAI's body
``{"error": {"message", "type", "param", "code"}}``.

**Scripted faults and the calls log**, under ``/mock/`` (no key needed): ``POST /mock/faults``
``{"model": "gpt-4o", "status": 500, "times": 1}`` makes the next call(s) for that model (``"*"``:
any) fail with that status (429 with ``retry-after``); without a status a fault bends an answer
that succeeds: ``delay_ms`` (late), ``cut_after_tokens`` (a stream stops after that many tokens,
with no finish_reason, usage or ``[DONE]``), ``no_usage`` (no usage reported). Faults queue in the
order posted. ``GET /mock/faults`` lists them, ``DELETE /mock/faults`` clears them.
``GET /mock/calls[?model=]`` lists the calls received (model, stream, status, the usage reported,
tokens sent, outcome), ``DELETE /mock/calls`` forgets them. ``GET /mock/health`` answers
``{"status": "ok"}``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import json
import math
import random
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass, field
from functools import cache
from typing import Any, Literal

import uvicorn
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from routewise.contracts.catalog import default_catalog
from routewise.runtime.tokens import MIN_CACHED_PREFIX, count_text, openai_encoding, token_counts

MAX_OUTPUT_TOKENS = 131_072
"""The largest ``max_tokens`` answered (a larger one is a 400, as a real model's limit would be)."""
MAX_BODY_BYTES = 32 * 1024 * 1024
CACHE_STEP = 128
CALLS_KEPT = 10_000
"""The calls log keeps the most recent calls only, so a long benchmark does not grow it forever."""
FULL_LENGTH_HEADER = "x-mock-full-length"
SYSTEM_FINGERPRINT = "fp_routewise_mock"


@dataclass(frozen=True)
class MockSettings:
    seed: int = 0
    models: tuple[str, ...] = ()
    """What ``GET /v1/models`` lists (the catalog's ids when empty); any name is answered anyway."""
    api_key: str | None = None
    full_length: bool = False
    latency_ms: float = 0.0
    per_token_ms: float = 0.0
    ttft_ms: float | None = None
    error_rate: float = 0.0
    rate_limit_rate: float = 0.0
    retry_after_s: float = 1.0
    output_median: int = 150
    output_sigma: float = 0.8
    default_max_tokens: int = 4096
    chunk_tokens: int = 4

    def __post_init__(self) -> None:
        problems = []
        if not (0 <= self.error_rate <= 1 and 0 <= self.rate_limit_rate <= 1):
            problems.append("error and 429 rates are shares between 0 and 1")
        if self.error_rate + self.rate_limit_rate > 1:
            problems.append("error rate + 429 rate cannot exceed 1")
        times = (self.latency_ms, self.per_token_ms, self.ttft_ms or 0, self.retry_after_s)
        if not all(math.isfinite(t) and t >= 0 for t in times):
            problems.append("latencies and retry-after are finite and not negative")
        if not (1 <= self.output_median <= MAX_OUTPUT_TOKENS and 1 <= self.default_max_tokens <= MAX_OUTPUT_TOKENS):
            problems.append(f"output median and default max tokens are between 1 and {MAX_OUTPUT_TOKENS}")
        if not (0 <= self.output_sigma <= 5) or not (1 <= self.chunk_tokens <= 1000):
            problems.append("output sigma is between 0 and 5, chunk tokens between 1 and 1000")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def first_token_ms(self) -> float:
        return self.latency_ms if self.ttft_ms is None else self.ttft_ms


# ---- the request ---------------------------------------------------------------------------------


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class ContentPart(_Open):
    type: str = Field(max_length=64)
    text: str | None = None


class Message(_Open):
    role: str = Field(min_length=1, max_length=64)
    content: str | list[ContentPart] | None = None

    @property
    def text(self) -> str:
        if isinstance(self.content, list):
            return "\n".join(p.text for p in self.content if p.type == "text" and p.text is not None)
        return self.content or ""


class StreamOptions(_Open):
    include_usage: bool = False


class ChatRequest(_Open):
    model: str = Field(min_length=1, max_length=256)
    messages: list[Message] = Field(min_length=1, max_length=10_000)
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_OUTPUT_TOKENS)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_OUTPUT_TOKENS)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(default=1, ge=1, le=1)  # one choice per answer

    @property
    def output_cap(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


class FaultSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = Field(default="*", min_length=1, max_length=256)
    status: int | None = Field(default=None, ge=400, le=599)
    times: int = Field(default=1, ge=1, le=1_000_000)
    delay_ms: int = Field(default=0, ge=0, le=600_000)
    retry_after_s: float | None = Field(default=None, ge=0, le=3600)
    message: str | None = Field(default=None, max_length=1000)
    cut_after_tokens: int | None = Field(default=None, ge=0, le=MAX_OUTPUT_TOKENS)
    """A stream stops after at most this many tokens: no finish_reason, no usage, no [DONE]."""
    no_usage: bool = False
    """The answer reports no usage (a plain one no ``usage``, a stream no usage chunk)."""

    @model_validator(mode="after")
    def _does_something(self) -> FaultSpec:
        if self.status is None and not self.delay_ms and self.cut_after_tokens is None and not self.no_usage:
            raise ValueError("a fault needs a status, a delay_ms, a cut_after_tokens or no_usage")
        return self


# ---- the answer ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    finish_reason: Literal["stop", "length"]
    pieces: tuple[str, ...]
    """The text, a token a piece."""

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    def usage(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }


@dataclass(frozen=True)
class _Counted:
    role: str
    content: str


_WORD_LIST = (
    "model request answer token cost budget route price cache stream result value system service "
    "message data query time rate limit user team policy task quality call reply provider gateway "
    "level report event record table index order list number point plan step case rule test check "
    "change state field name type form part line word text file path node link page view field "
    "and the of to in for with on at by from as is are was be can will may should could would must "
    "that this it which when where while then also only more most less each every some many any "
    "new old good best fast slow small large long short high low first last next early late clear "
    "simple full open close send read write keep hold find give take make use run start stop wait "
    "help show tell ask know think see look work learn build grow move turn set get put add count"
)
_WORDS = tuple(_WORD_LIST.split())
_STARTERS = ("The", "This", "It", "We", "In", "A", "For", "When", "Each", "Our", "Then", "Now")


@dataclass(frozen=True)
class _Vocabulary:
    first: tuple[str, ...]
    starters: tuple[str, ...]
    words: tuple[str, ...]


@cache
def _vocabulary(encoding: str) -> _Vocabulary:
    """Pieces that are one token each in this encoding (and stay one when put side by side)."""

    def single(pieces: Sequence[str]) -> tuple[str, ...]:
        return tuple(p for p in dict.fromkeys(pieces) if count_text(p, encoding) == 1)

    return _Vocabulary(
        first=single(_STARTERS),
        starters=single([" " + s for s in _STARTERS]),
        words=single([" " + w for w in _WORDS]),
    )


def _pieces(n: int, rng: random.Random, vocab: _Vocabulary) -> list[str]:
    """``n`` one-token pieces of plausible sentences (``n`` may be 0)."""
    pieces: list[str] = []
    left = 0
    while len(pieces) < n:
        if left > 0:
            pieces.append(rng.choice(vocab.words))
            left -= 1
        elif pieces and pieces[-1] != ".":
            pieces.append(".")
        else:
            pieces.append(rng.choice(vocab.starters if pieces else vocab.first))
            left = rng.randint(5, 15)
    return pieces


def request_seed(seed: int, body: dict[str, Any]) -> int:
    """The seed of one request: the mock's seed and the request without its stream options."""
    content = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return int.from_bytes(hashlib.sha256(f"{seed}\n{canonical}".encode()).digest()[:8], "big")


def cached_share(prompt_tokens: int, draw: float) -> int:
    """The rule of ``cached_tokens``: a share between 50 % and 100 % of a prompt of ≥ 1,024 tokens,
    in 128-token steps, when at least 1,024."""
    cached = int(prompt_tokens * (0.5 + draw / 2)) // CACHE_STEP * CACHE_STEP
    return cached if cached >= MIN_CACHED_PREFIX else 0


def plan_answer(settings: MockSettings, request: ChatRequest, body: dict[str, Any], *, full_length: bool) -> Answer:
    """What the mock answers to this request: its usage and text (deterministic, see the module)."""
    rng = random.Random(request_seed(settings.seed, body))  # noqa: S311 - a seeded simulation, not a secret
    encoding = openai_encoding(request.model)
    prompt_tokens = token_counts(None, [_Counted(m.role, m.text) for m in request.messages], encoding)[0]
    cap = request.output_cap or settings.default_max_tokens
    drawn = max(1, round(rng.lognormvariate(math.log(settings.output_median), settings.output_sigma)))
    cached = cached_share(prompt_tokens, rng.random())
    target = cap if full_length else min(drawn, cap)
    finish: Literal["stop", "length"] = "length" if target >= cap else "stop"
    pieces = _pieces(target, rng, _vocabulary(encoding))
    if finish == "stop" and len(pieces) > 2 and pieces[-2] != ".":
        pieces[-1] = "."  # a finished answer ends its sentence
    completion = count_text("".join(pieces), encoding)
    while completion > target:  # never seen: the pieces are one token each; kept as a guarantee
        pieces.pop()
        completion = count_text("".join(pieces), encoding)
    return Answer(prompt_tokens, cached, completion, finish, tuple(pieces))


# ---- faults and the calls log --------------------------------------------------------------------


@dataclass
class Fault:
    id: int
    model: str
    status: int | None
    times: int
    delay_ms: int
    retry_after_s: float | None
    message: str | None
    cut_after_tokens: int | None = None
    no_usage: bool = False


@dataclass(frozen=True)
class Quirks:
    """How a scripted fault bends an answer that still succeeds."""

    cut_after_tokens: int | None = None
    no_usage: bool = False


@dataclass
class Call:
    id: int
    at: float
    model: str | None
    stream: bool
    status: int
    max_tokens: int | None = None
    full_length: bool = False
    usage: dict[str, Any] | None = None
    """The usage the answer reported (None: none reported)."""
    tokens_sent: int = 0
    """Output tokens sent (for a stream, so far)."""
    error: str | None = None
    outcome: Literal["answered", "failed", "streaming", "completed", "cut", "disconnected"] = "answered"
    key_suffix: str | None = None
    """The last four characters of the bearer key the call carried (as dashboards show keys)."""


@dataclass
class _Failure:
    status: int
    message: str
    retry_after_s: float | None = None


@dataclass
class MockState:
    settings: MockSettings
    faults: list[Fault] = field(default_factory=list)
    calls: deque[Call] = field(default_factory=lambda: deque(maxlen=CALLS_KEPT))
    lock: threading.Lock = field(default_factory=threading.Lock)
    _fault_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _call_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _draws: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self._draws = random.Random(f"{self.settings.seed}:faults")  # noqa: S311 - seeded, reproducible

    def add_fault(self, spec: FaultSpec) -> Fault:
        with self.lock:
            fault = Fault(id=next(self._fault_ids), **spec.model_dump())
            self.faults.append(fault)
            return fault

    def clear_faults(self) -> int:
        with self.lock:
            count = len(self.faults)
            self.faults.clear()
            return count

    def take_fault(self, model: str) -> Fault | None:
        """The first scripted fault for this model, used once."""
        with self.lock:
            for fault in self.faults:
                if fault.model in ("*", model):
                    fault.times -= 1
                    if fault.times == 0:
                        self.faults.remove(fault)
                    return fault
            return None

    def random_failure(self) -> _Failure | None:
        with self.lock:
            draw = self._draws.random()
        if draw < self.settings.rate_limit_rate:
            return _Failure(429, "Rate limit reached (mock provider)", self.settings.retry_after_s)
        if draw < self.settings.rate_limit_rate + self.settings.error_rate:
            return _Failure(500, "The server had an error while processing your request (mock provider)")
        return None

    def record(self, call: Call) -> Call:
        with self.lock:
            call.id = next(self._call_ids)
            self.calls.append(call)
        return call

    def finish(self, call: Call, outcome: Literal["completed", "cut", "disconnected"]) -> None:
        with self.lock:
            call.outcome = outcome

    def list_calls(self, model: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            return [asdict(c) for c in self.calls if model is None or c.model == model]

    def clear_calls(self) -> int:
        with self.lock:
            count = len(self.calls)
            self.calls.clear()
            return count


# ---- HTTP ----------------------------------------------------------------------------------------

_ERROR_KINDS: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_denied", None),
    404: ("invalid_request_error", "not_found"),
    408: ("timeout", None),
    413: ("invalid_request_error", "request_too_large"),
    429: ("requests", "rate_limit_exceeded"),
}


def error_kind(status: int) -> tuple[str, str | None]:
    """OpenAI's error ``type`` and ``code`` for a status."""
    return _ERROR_KINDS.get(status, ("server_error" if status >= 500 else "invalid_request_error", None))


def error_response(
    status: int, message: str, *, param: str | None = None, retry_after_s: float | None = None
) -> JSONResponse:
    """OpenAI's error body, with ``retry-after`` on a 429."""
    kind, code = error_kind(status)
    headers = {}
    if retry_after_s is not None:
        headers = {"retry-after": f"{retry_after_s:g}", "retry-after-ms": str(int(retry_after_s * 1000))}
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def _state(request: Request) -> MockState:
    state: MockState = request.app.state.mock
    return state


def _bearer(request: Request) -> str | None:
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    return key.strip() if scheme.lower() == "bearer" and key.strip() else None


def _refused(state: MockState, key: str | None) -> JSONResponse | None:
    """A 401 when a key is required and this is not it."""
    if state.settings.api_key is not None and key != state.settings.api_key:
        return error_response(401, "Incorrect API key provided (mock provider).")
    return None


def _invalid(exc: ValidationError) -> JSONResponse:
    first = exc.errors()[0]
    param = ".".join(str(part) for part in first["loc"]) or None
    return error_response(400, f"{param or 'body'}: {first['msg']}", param=param)


async def _parse(request: Request) -> tuple[dict[str, Any], ChatRequest] | JSONResponse:
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        return error_response(413, f"the request body is larger than {MAX_BODY_BYTES} bytes")
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        return error_response(400, f"the body is not valid JSON: {exc}")
    if not isinstance(body, dict):
        return error_response(400, "the body must be a JSON object")
    try:
        return body, ChatRequest.model_validate(body)
    except ValidationError as exc:
        return _invalid(exc)


async def _failure(state: MockState, model: str) -> tuple[_Failure | None, Quirks]:
    """A scripted fault (after its delay) or a seeded random failure, if this call gets one, and
    how a scripted fault bends the answer otherwise."""
    fault = state.take_fault(model)
    if fault is None:
        return state.random_failure(), Quirks()
    await _pause(fault.delay_ms)
    if fault.status is not None:
        retry = fault.retry_after_s if fault.retry_after_s is not None else state.settings.retry_after_s
        message = fault.message or f"scripted fault: {fault.status} for {model} (mock provider)"
        return _Failure(fault.status, message, retry if fault.status == 429 else None), Quirks()
    return None, Quirks(fault.cut_after_tokens, fault.no_usage)


async def _pause(ms: float) -> None:
    if ms > 0:
        await asyncio.sleep(ms / 1000)


def _wants_full_length(state: MockState, request: Request) -> bool:
    return state.settings.full_length or request.headers.get(FULL_LENGTH_HEADER, "").lower() in ("1", "true", "yes")


router = APIRouter()


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(request: Request) -> Response:
    state = _state(request)
    key = _bearer(request)
    call = Call(id=0, at=time.time(), model=None, stream=False, status=200, key_suffix=key[-4:] if key else None)
    if refused := _refused(state, key):
        return _failed(state, call, refused)
    parsed = await _parse(request)
    if isinstance(parsed, JSONResponse):
        return _failed(state, call, parsed)
    body, chat = parsed
    call.model, call.stream, call.max_tokens = chat.model, chat.stream, chat.output_cap
    failure, quirks = await _failure(state, chat.model)
    if failure is not None:
        response = error_response(failure.status, failure.message, retry_after_s=failure.retry_after_s)
        return _failed(state, call, response)
    call.full_length = _wants_full_length(state, request)
    answer = plan_answer(state.settings, chat, body, full_length=call.full_length)
    reports_usage = not quirks.no_usage and (quirks.cut_after_tokens is None or not chat.stream)
    call.usage = answer.usage() if reports_usage and (chat.include_usage or not chat.stream) else None
    if chat.stream:
        call.outcome = "streaming"
        state.record(call)
        return StreamingResponse(
            _chunks(state, call, chat, answer, quirks),
            media_type="text/event-stream",
            headers={"cache-control": "no-cache"},
        )
    await _pause(state.settings.latency_ms + state.settings.per_token_ms * answer.completion_tokens)
    call.tokens_sent = answer.completion_tokens
    state.record(call)
    return JSONResponse(_completion(chat.model, answer, with_usage=reports_usage))


def _failed(state: MockState, call: Call, response: JSONResponse) -> JSONResponse:
    call.status, call.outcome = response.status_code, "failed"
    call.error = error_kind(response.status_code)[0]
    state.record(call)
    return response


def _completion(model: str, answer: Answer, *, with_usage: bool) -> dict[str, Any]:
    completion = {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": answer.text, "refusal": None, "annotations": []},
                "logprobs": None,
                "finish_reason": answer.finish_reason,
            }
        ],
        "usage": answer.usage(),
        "service_tier": "default",
        "system_fingerprint": SYSTEM_FINGERPRINT,
    }
    if not with_usage:
        del completion["usage"]
    return completion


async def _chunks(
    state: MockState, call: Call, chat: ChatRequest, answer: Answer, quirks: Quirks
) -> AsyncIterator[bytes]:
    head = {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": chat.model,
        "service_tier": "default",
        "system_fingerprint": SYSTEM_FINGERPRINT,
    }

    def event(delta: dict[str, Any] | None, finish: str | None = None, usage: dict[str, Any] | None = None) -> bytes:
        choices = [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
        chunk = {**head, "choices": choices}
        if chat.include_usage:
            chunk["usage"] = usage
        return b"data: " + json.dumps(chunk).encode() + b"\n\n"

    settings = state.settings
    try:
        await _pause(settings.first_token_ms)
        yield event({"role": "assistant", "content": "", "refusal": None})
        pieces, size = answer.pieces[: quirks.cut_after_tokens], settings.chunk_tokens
        for start in range(0, len(pieces), size):
            group = pieces[start : start + size]
            await _pause(settings.per_token_ms * len(group))
            yield event({"content": "".join(group)})
            call.tokens_sent = start + len(group)
        if quirks.cut_after_tokens is not None:
            state.finish(call, "cut")
            return
        yield event({}, answer.finish_reason)
        if chat.include_usage and not quirks.no_usage:
            yield event(None, usage=answer.usage())
        state.finish(call, "completed")
        yield b"data: [DONE]\n\n"
    finally:
        if call.outcome == "streaming":
            state.finish(call, "disconnected")


@router.get("/v1/models", response_model=None)
async def list_models(request: Request) -> dict[str, Any] | JSONResponse:
    state = _state(request)
    if refused := _refused(state, _bearer(request)):
        return refused
    models = state.settings.models or tuple(m.id for m in default_catalog().models)
    return {"object": "list", "data": [_model(m) for m in models]}


@router.get("/v1/models/{model:path}", response_model=None)
async def get_model(request: Request, model: str) -> dict[str, Any] | JSONResponse:
    return _refused(_state(request), _bearer(request)) or _model(model)


def _model(model: str) -> dict[str, Any]:
    known = default_catalog().get(model)
    return {"id": model, "object": "model", "created": 0, "owned_by": known.provider if known else "routewise-mock"}


@router.get("/mock/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.post("/mock/faults", status_code=201, response_model=None)
async def add_fault(request: Request) -> dict[str, Any] | JSONResponse:
    try:
        spec = FaultSpec.model_validate_json(await request.body())
    except ValidationError as exc:
        return _invalid(exc)
    return asdict(_state(request).add_fault(spec))


@router.get("/mock/faults")
async def list_faults(request: Request) -> dict[str, Any]:
    state = _state(request)
    with state.lock:
        return {"data": [asdict(f) for f in state.faults]}


@router.delete("/mock/faults")
async def clear_faults(request: Request) -> dict[str, int]:
    return {"cleared": _state(request).clear_faults()}


@router.get("/mock/calls")
async def list_calls(request: Request, model: str | None = None) -> dict[str, Any]:
    return {"data": _state(request).list_calls(model)}


@router.delete("/mock/calls")
async def clear_calls(request: Request) -> dict[str, int]:
    return {"cleared": _state(request).clear_calls()}


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, StarletteHTTPException) else 500
    return error_response(status, f"{request.method} {request.url.path}: {getattr(exc, 'detail', exc)}")


def build_app(state: MockState) -> FastAPI:
    app = FastAPI(title="Routewise mock LLM provider", version="1", summary="OpenAI-compatible, deterministic")
    app.state.mock = state
    app.include_router(router)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    return app


# ---- running it ----------------------------------------------------------------------------------


class MockProvider:
    """The mock on a real uvicorn server in a thread of its own: ``start()`` returns its URL."""

    def __init__(self, settings: MockSettings | None = None, **options: Any) -> None:
        self.settings = settings or MockSettings(**options)
        self.state = MockState(self.settings)
        self.app = build_app(self.state)
        self.url = ""
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def openai_base_url(self) -> str:
        return f"{self.url}/v1"

    def start(self, host: str = "127.0.0.1", port: int = 0, timeout: float = 10.0) -> str:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # TCP: asyncio sets NODELAY
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        config = uvicorn.Config(self.app, log_level="warning", access_log=False, lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="mock-provider", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                sock.close()
                raise RuntimeError(f"the mock provider did not start on {host}:{sock.getsockname()[1]}")
            time.sleep(0.005)
        self.url = f"http://{host}:{sock.getsockname()[1]}"
        return self.url

    def stop(self, timeout: float = 10.0) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout)
        self._server = self._thread = None

    def __enter__(self) -> MockProvider:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def add_fault(self, model: str = "*", status: int | None = 500, times: int = 1, **more: Any) -> Fault:
        return self.state.add_fault(FaultSpec(model=model, status=status, times=times, **more))

    def clear_faults(self) -> int:
        return self.state.clear_faults()

    def calls(self, model: str | None = None) -> list[dict[str, Any]]:
        return self.state.list_calls(model)


def parse_args(argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, MockSettings]:
    p = argparse.ArgumentParser(
        prog="python -m routewise.dev.mock_provider",
        description="A mock LLM provider speaking the OpenAI chat-completions protocol (deterministic, offline).",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8090)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--models", default="", help="comma-separated ids GET /v1/models lists (default: the catalog's)")
    p.add_argument("--api-key", default=None, help="require this bearer key (any is accepted otherwise)")
    p.add_argument("--full-length", action="store_true", help="always answer max_tokens output tokens")
    p.add_argument("--latency-ms", type=float, default=0.0, help="base latency of an answer")
    p.add_argument("--per-token-ms", type=float, default=0.0, help="added per output token")
    p.add_argument("--ttft-ms", type=float, default=None, help="time to a stream's first chunk (default: latency)")
    p.add_argument("--error-rate", type=float, default=0.0, help="share of calls answered 500")
    p.add_argument("--rate-limit-rate", type=float, default=0.0, help="share of calls answered 429")
    p.add_argument("--retry-after", type=float, default=1.0, help="seconds a 429 asks to wait")
    p.add_argument("--output-median", type=int, default=150, help="median output tokens")
    p.add_argument("--output-sigma", type=float, default=0.8, help="spread of the log-normal output length")
    p.add_argument("--default-max-tokens", type=int, default=4096, help="the cap when a request sends none")
    p.add_argument("--chunk-tokens", type=int, default=4, help="tokens per streamed chunk")
    args = p.parse_args(argv)
    try:
        settings = MockSettings(
            seed=args.seed,
            models=tuple(m.strip() for m in args.models.split(",") if m.strip()),
            api_key=args.api_key or None,
            full_length=args.full_length,
            latency_ms=args.latency_ms,
            per_token_ms=args.per_token_ms,
            ttft_ms=args.ttft_ms,
            error_rate=args.error_rate,
            rate_limit_rate=args.rate_limit_rate,
            retry_after_s=args.retry_after,
            output_median=args.output_median,
            output_sigma=args.output_sigma,
            default_max_tokens=args.default_max_tokens,
            chunk_tokens=args.chunk_tokens,
        )
    except ValueError as exc:
        p.error(str(exc))
    return args, settings


def main(argv: Sequence[str] | None = None) -> None:
    args, settings = parse_args(argv)
    app = build_app(MockState(settings))
    print(f"mock provider: http://{args.host}:{args.port}/v1 (seed {settings.seed})", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
