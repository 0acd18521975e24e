"""The OpenAI-compatible routes over one model folder (FastAPI): ``GET /v1/models``,
``POST /v1/chat/completions`` and ``POST /v1/completions`` for a language model (streamed as
Server-Sent Events with ``stream: true``), ``POST /v1/classify`` for a classifier. Every error
is OpenAI's error body (``{"error": {"message", "type", "param", "code"}}``) and the server
keeps serving. docs/serving.md lists the routes, parameters and errors."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import torch
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from scratchgpt.book.classify import classify
from scratchgpt.serve.engine import Engine, QueueFull
from scratchgpt.serve.engine import Request as Generation
from scratchgpt.serve.text import SECTION, Continuation, PromptError, chat_prompt

log = logging.getLogger(__name__)


class APIError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None, **headers: str):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.headers = status, message, param, code, headers


ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error"}


def error_response(status: int, message: str, param: str | None = None, code: str | None = None, headers=None):
    kind = ERROR_TYPES.get(status, "rate_limit_error" if status == 429 else "server_error")
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


# ---------------------------------------------------------------------------------------------
# What is served


@dataclass
class Served:
    """The model folder behind the routes: a language model (with its ``engine``) or a
    classifier (``head``); ``instruct`` when it was finetuned on the book's Alpaca prompt."""

    name: str
    model: Any
    tokenizer: Any
    created: int
    engine: Engine | None = None
    head: Any = None
    instruct: bool = False
    max_tokens: int = 512  # the most new tokens one request may ask for
    api_key: str | None = None

    def __post_init__(self) -> None:
        self.classify_lock = threading.Lock()

    @property
    def context_length(self) -> int:
        return self.model.config.context_length


# ---------------------------------------------------------------------------------------------
# Requests (unknown fields are ignored, as OpenAI's server does for fields it does not know)


class Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Sampling(Body):
    model: str
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    top_k: Annotated[int, Field(ge=1)] | None = None  # an extension, as vLLM's
    stop: str | list[str] | None = None
    seed: int | None = None
    n: Annotated[int, Field(ge=1)] | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logprobs: bool | int | None = None


class TextPart(Body):
    type: Literal["text"]
    text: str


class Message(Body):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class ChatRequest(Sampling):
    messages: Annotated[list[Message], Field(min_length=1)]
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None


class CompletionRequest(Sampling):
    prompt: str | Annotated[list[int], Field(min_length=1)] | Annotated[list[str], Field(min_length=1, max_length=1)]
    echo: bool = False


class ClassifyRequest(Body):
    model: str
    input: str | Annotated[list[str], Field(min_length=1, max_length=256)]


# ---------------------------------------------------------------------------------------------
# The app


def create_app(served: Served) -> FastAPI:
    """The routes over ``served``; its engine (if any) must be running in a thread."""
    app = FastAPI(title=f"scratchgpt serve: {served.name}", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(APIError)
    async def _api_error(_: Request, e: APIError) -> JSONResponse:
        return error_response(e.status, e.message, e.param, e.code, e.headers or None)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, e: RequestValidationError) -> JSONResponse:
        first = e.errors()[0]
        loc = [str(part) for part in first.get("loc", ()) if part != "body"]
        if first.get("type") == "json_invalid":
            return error_response(400, f"the body is not valid JSON: {first.get('msg')}", None, "invalid_json")
        if first.get("type") == "missing" and not loc:
            return error_response(400, "the body must be a JSON object", None, "invalid_json")
        # a union's failures name each alternative's type ("prompt.str", "prompt.list[int].0"): keep the field
        param = ".".join(p for p in loc if not any(c in p for c in "[]") and p not in ("str", "int", "float"))
        return error_response(400, f"{param or 'body'}: {first.get('msg')}", param or None, "invalid_value")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, e: StarletteHTTPException) -> JSONResponse:
        return error_response(e.status_code, str(e.detail), None, None, getattr(e, "headers", None))

    async def authorized(request: Request) -> None:
        if served.api_key is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, key = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(key.strip().encode(), served.api_key.encode()):
            raise APIError(401, "missing or wrong API key (Authorization: Bearer ...)", None, "invalid_api_key")

    auth = [Depends(authorized)]

    @app.get("/v1/models", dependencies=auth)
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [model_card(served)]}

    @app.get("/v1/models/{name}", dependencies=auth)
    async def one_model(name: str) -> dict[str, Any]:
        check_model(served, name)
        return model_card(served)

    @app.post("/v1/chat/completions", dependencies=auth)
    async def chat(body: ChatRequest, request: Request):
        check_model(served, body.model, language=True)
        try:
            text = chat_prompt([(m.role, m.text()) for m in body.messages])
        except PromptError as e:
            raise APIError(400, str(e), e.param, "invalid_value") from None
        ids = served.tokenizer.encode(text, allow_special=False)
        max_tokens = body.max_completion_tokens or body.max_tokens
        stops = stop_list(body.stop) + ([SECTION] if served.instruct else [])
        return await respond(served, body, request, ids, max_tokens, stops, "chat", trim=served.instruct)

    @app.post("/v1/completions", dependencies=auth)
    async def completions(body: CompletionRequest, request: Request):
        check_model(served, body.model, language=True)
        if body.echo:
            raise APIError(400, "echo is not supported", "echo", "unsupported_value")
        prompt = body.prompt[0] if isinstance(body.prompt, list) and isinstance(body.prompt[0], str) else body.prompt
        if isinstance(prompt, str):
            ids = served.tokenizer.encode(prompt, allow_special=True)
        else:
            vocab = served.model.config.vocab_size
            bad = [t for t in prompt if not 0 <= t < vocab]
            if bad:
                raise APIError(400, f"prompt: token id {bad[0]} is not in [0, {vocab})", "prompt", "invalid_value")
            ids = list(prompt)
        return await respond(served, body, request, ids, body.max_tokens, stop_list(body.stop), "text")

    @app.post("/v1/classify", dependencies=auth)
    async def classify_route(body: ClassifyRequest) -> dict[str, Any]:
        check_model(served, body.model, language=False)
        texts = [body.input] if isinstance(body.input, str) else body.input
        results = await asyncio.to_thread(classify_all, served, texts)
        tokens = sum(len(served.tokenizer.encode(t, allow_special=False)) for t in texts)
        return {
            "object": "list",
            "model": served.name,
            "data": [{"index": i, "label": label, "probability": p} for i, (label, p) in enumerate(results)],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    return app


def model_card(served: Served) -> dict[str, Any]:
    return {"id": served.name, "object": "model", "created": served.created, "owned_by": "scratchgpt"}


def check_model(served: Served, name: str, language: bool | None = None) -> None:
    if name != served.name:
        raise APIError(
            404, f"model {name!r} is not served here; this server serves {served.name!r}", "model", "model_not_found"
        )
    if language is True and served.engine is None:
        raise APIError(400, f"{served.name} is a classifier: POST /v1/classify", "model", "model_not_supported")
    if language is False and served.head is None:
        raise APIError(400, f"{served.name} is a language model, not a classifier", "model", "model_not_supported")


def stop_list(stop: str | list[str] | None) -> list[str]:
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if len(stops) > 4:
        raise APIError(400, f"stop: at most 4 sequences, got {len(stops)}", "stop", "invalid_value")
    return [s for s in stops if s]


def classify_all(served: Served, texts: list[str]) -> list[tuple[str, float]]:
    with served.classify_lock, torch.no_grad():
        return [classify(t, served.model, served.tokenizer, served.head) for t in texts]


def checked_limits(served: Served, body: Sampling, ids: list[int], max_tokens: int | None) -> int:
    """The request's max_tokens, or the 400 that says which limit it passes."""
    if body.n not in (None, 1):
        raise APIError(400, f"n: only 1 choice per request is served, got {body.n}", "n", "unsupported_value")
    for name in ("presence_penalty", "frequency_penalty"):
        if getattr(body, name) not in (None, 0, 0.0):
            raise APIError(400, f"{name} is not supported (only 0)", name, "unsupported_value")
    if body.logprobs:
        raise APIError(400, "logprobs are not supported", "logprobs", "unsupported_value")
    ctx = served.context_length
    if not ids:
        raise APIError(400, "the prompt is empty", "prompt", "invalid_value")
    if len(ids) >= ctx:
        raise APIError(
            400,
            f"the prompt has {len(ids)} tokens; this model's context holds {ctx}, with room for at least one new token",
            "messages" if isinstance(body, ChatRequest) else "prompt",
            "context_length_exceeded",
        )
    room = ctx - len(ids)
    if max_tokens is None:
        return min(served.max_tokens, room)
    param = "max_completion_tokens" if isinstance(body, ChatRequest) and body.max_completion_tokens else "max_tokens"
    if max_tokens > served.max_tokens:
        raise APIError(
            400, f"{param}: {max_tokens} is over this server's limit of {served.max_tokens}", param, "invalid_value"
        )
    if max_tokens > room:
        raise APIError(
            400,
            f"{param}: the prompt's {len(ids)} tokens + {max_tokens} new ones exceed the context length {ctx}",
            param,
            "context_length_exceeded",
        )
    return max_tokens


async def respond(
    served: Served,
    body: Sampling,
    request: Request,
    ids: list[int],
    max_tokens: int | None,
    stops: list[str],
    kind: Literal["chat", "text"],
    trim: bool = False,
):
    """Submit the generation; answer in one JSON body, or as Server-Sent Events."""
    assert served.engine is not None
    limit = checked_limits(served, body, ids, max_tokens)
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[tuple[int | None, str | None]] = asyncio.Queue()

    def emit(token: int | None, reason: str | None) -> None:  # the engine's thread
        with contextlib.suppress(RuntimeError):  # the event loop is gone: the server is stopping
            loop.call_soon_threadsafe(events.put_nowait, (token, reason))

    temperature = 1.0 if body.temperature is None else body.temperature
    generation = Generation(
        prompt=ids,
        max_tokens=limit,
        emit=emit,
        temperature=temperature,
        top_p=body.top_p,
        top_k=body.top_k,
        seed=body.seed,
        eos_id=served.tokenizer.eot_id,
    )
    try:
        served.engine.submit(generation)
    except QueueFull as e:
        raise APIError(
            429, f"the server is busy: {e}; retry shortly", None, "queue_full", **{"Retry-After": "1"}
        ) from None
    ident = ("chatcmpl-" if kind == "chat" else "cmpl-") + uuid.uuid4().hex[:24]
    created = int(time.time())
    text = Continuation(served.tokenizer, stops, trim=trim)

    async def pieces() -> AsyncIterator[tuple[str, str | None]]:
        """(new text, finish reason or None) until the generation ends."""
        try:
            while True:
                token, reason = await events.get()
                if token is None:
                    if reason and reason.startswith("error"):
                        raise RuntimeError(reason)
                    yield text.finish(), "stop" if reason == "stop" else "length"
                    return
                piece = text.add(token)
                if text.stopped:
                    generation.cancel()
                    yield piece, "stop"
                    return
                if piece:
                    yield piece, None
        finally:
            generation.cancel()  # a client that left, or a stop string: the row leaves the batch

    def usage() -> dict[str, int]:
        return {
            "prompt_tokens": len(ids),
            "completion_tokens": generation.generated,
            "total_tokens": len(ids) + generation.generated,
        }

    if body.stream:
        with_usage = bool((body.stream_options or {}).get("include_usage"))
        return StreamingResponse(
            sse(pieces(), kind, ident, created, served.name, with_usage, usage),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    parts: list[str] = []
    finish = "length"
    waiting = asyncio.ensure_future(_collect(pieces(), parts))
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        done, _ = await asyncio.wait({waiting, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if waiting not in done:  # the client left: its row leaves the batch
        waiting.cancel()
        generation.cancel()
        raise APIError(499, "the client closed the connection")
    try:
        finish = waiting.result()
    except RuntimeError as e:
        raise APIError(500, f"generation failed: {e}", None, "server_error") from None
    content = "".join(parts)
    if kind == "chat":
        choice = {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish}
        return {
            "id": ident,
            "object": "chat.completion",
            "created": created,
            "model": served.name,
            "choices": [{**choice, "logprobs": None}],
            "usage": usage(),
        }
    return {
        "id": ident,
        "object": "text_completion",
        "created": created,
        "model": served.name,
        "choices": [{"index": 0, "text": content, "finish_reason": finish, "logprobs": None}],
        "usage": usage(),
    }


async def _collect(pieces: AsyncIterator[tuple[str, str | None]], parts: list[str]) -> str:
    async for piece, reason in pieces:
        parts.append(piece)
        if reason:
            return reason
    return "length"


async def _disconnected(request: Request) -> None:
    """Returns when the client closes the connection (the body has been read already)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def sse(pieces, kind, ident, created, name, with_usage, usage) -> AsyncIterator[str]:
    """OpenAI's chunk format: one ``data:`` event per piece of text, then the finish reason (and
    the usage, when asked), then ``data: [DONE]``."""
    obj = "chat.completion.chunk" if kind == "chat" else "text_completion"

    def event(choice: dict[str, Any], extra: dict[str, Any] | None = None) -> str:
        chunk = {"id": ident, "object": obj, "created": created, "model": name, "choices": [choice], **(extra or {})}
        return f"data: {json.dumps(chunk)}\n\n"

    def choice(piece: str, reason: str | None, first: bool = False) -> dict[str, Any]:
        if kind == "chat":
            delta = ({"role": "assistant"} if first else {}) | ({"content": piece} if piece or first else {})
            return {"index": 0, "delta": delta, "finish_reason": reason, "logprobs": None}
        return {"index": 0, "text": piece, "finish_reason": reason, "logprobs": None}

    first = kind == "chat"
    if first:
        yield event(choice("", None, first=True))
    try:
        async for piece, reason in pieces:
            if piece:
                yield event(choice(piece, None))
            if reason:
                yield event(choice("", reason))
                break
    except RuntimeError as e:
        error = {"error": {"message": f"generation failed: {e}", "type": "server_error", "param": None, "code": None}}
        yield f"data: {json.dumps(error)}\n\n"
        return
    if with_usage:
        chunk = {"id": ident, "object": obj, "created": created, "model": name, "choices": [], "usage": usage()}
        yield f"data: {json.dumps(chunk)}\n\n"
    yield "data: [DONE]\n\n"
