"""The HTTP app: predictions, explanations and a small page, over one model loaded at start-up.

    POST /predict   {"text": "..."} or {"texts": ["...", ...]}  -> labels, probabilities, model name
    POST /explain   {"text": "..."}                            -> the prediction and a score per token
    GET  /health    liveness;  GET /model: labels, config, training metrics, versions, limits
    GET  /          the page (static/: HTML, JS and CSS served by the app; nothing from a CDN)
    GET  /docs      OpenAPI docs (FastAPI's Swagger UI)

Every mistake a client can make gets a 4xx answer ``{"detail": "one sentence naming the problem"}``:
a body over ``max_body_bytes`` (413), a body that is not JSON (400), a missing, unknown or mistyped
field (422), a text over ``max_text_chars`` or a batch over ``max_batch`` (413); a failure inside
the server gets a 500 with one sentence, never a traceback (that goes to the server's log).
Inference runs on one thread: the model is shared, and its forward is not promised to be
re-entrant (the onnxruntime session is, but one thread keeps the two runtimes alike; each forward
already uses every core).
"""

# no "from __future__ import annotations": FastAPI reads the request models, defined inside
# create_app, from the endpoints' annotations at definition time
import asyncio
import logging
import math
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .errors import TextRNNError

log = logging.getLogger("textrnn")

STATIC = Path(__file__).parent / "static"
MAX_TEXT_CHARS = 50_000     # the longest IMDB review is about 14,000 characters
MAX_BATCH = 128
MAX_BODY_BYTES = 1_000_000
RUNTIMES = ("torch", "onnx")
_EXAMPLE = '{"text": "A wonderful film."}'
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")  # valid in a JSON string ("\\udfff"), not encodable as UTF-8
_JSON_TYPES = {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "an array",
               dict: "an object", type(None): "null"}


class ApiError(Exception):
    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status, self.detail = status, detail


class BodyLimit:
    """ASGI middleware: refuse a request body over ``max_bytes`` with 413, whether it announces its
    size (Content-Length) or streams it in chunks, before any of it is parsed.

    A client still sending its body gets the 413 only if the server reads that body: a socket
    closed with unread data is reset, and the reset destroys the answer on its way (Python clients
    such as httpx and requests write the whole body before reading). So the rest of the body is
    read and dropped, up to ``drain_factor`` times the limit in all, and the connection kept; it is
    closed at once for a body announced bigger than that, or one still streaming past it, and for a
    client waiting for "100 Continue" (it has sent nothing)."""

    def __init__(self, app, max_bytes: int, drain_factor: int = 16):
        self.app, self.max_bytes, self.drain_factor = app, max_bytes, drain_factor

    async def _refuse(self, send, size: str, close: bool = True) -> None:
        import json

        body = json.dumps({"detail": f"The request body is {size} bytes; the limit is {self.max_bytes:,} bytes."}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 413,
                    "headers": headers + [(b"connection", b"close")] * close})
        await send({"type": "http.response.body", "body": body})

    async def _drain(self, receive, size: int, more: bool) -> bool:
        """Read and drop the rest of the body; False if it goes past the drain limit or the client leaves."""
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return False
            size += len(message.get("body", b""))
            if size > self.drain_factor * self.max_bytes:
                return False
            more = message.get("more_body", False)
        return True

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            if b"100-continue" in headers.get(b"expect", b"").lower() or int(length) > self.drain_factor * self.max_bytes:
                return await self._refuse(send, f"{int(length):,}")
            return await self._refuse(send, f"{int(length):,}", close=not await self._drain(receive, 0, True))
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                more = message.get("more_body", False)
                return await self._refuse(send, f"over {self.max_bytes:,}", close=not await self._drain(receive, size, more))
            chunks.append(chunk)
            more = message.get("more_body", False)
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _finite(obj: Any) -> Any:
    """JSON cannot hold NaN or infinity (and Starlette refuses to write them): they become null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _field(loc) -> str:
    parts = [p for p in loc if p != "body"]
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def validation_message(errors: list[dict], fields: tuple[str, ...], content_type: str = "application/json") -> tuple[int, str]:
    """One status and one sentence for pydantic's list of errors (the first one is reported)."""
    if "json" not in content_type.lower() and any(isinstance(e.get("input"), bytes) for e in errors):
        return 415, f"Send the body as JSON with 'Content-Type: application/json'. Received: Content-Type {content_type or 'none'!r}."
    if not errors:
        return 422, "The request is not valid."
    # an unknown field explains the missing one beside it ({"texts": ...} sent to /explain): name it first
    e = next((e for e in errors if e.get("type") == "extra_forbidden"), errors[0])
    kind, field = e.get("type", ""), _field(e.get("loc", ()))
    received = _JSON_TYPES.get(type(e.get("input")), type(e.get("input")).__name__)
    if kind == "json_invalid":
        why = (e.get("ctx") or {}).get("error", "decode error")
        return 400, f"The body is not valid JSON ({why}). Send a JSON object such as {_EXAMPLE}."
    if kind == "missing" and not field:
        return 400, f"The request has no body. Send a JSON object such as {_EXAMPLE}."
    if kind == "missing":
        return 422, f"Missing field {field!r}. Send a JSON object such as {_EXAMPLE}."
    if kind == "extra_forbidden":
        return 422, f"Unknown field {field!r}; the fields are {', '.join(map(repr, fields))}."
    if kind in ("model_attributes_type", "dict_type", "model_type"):
        return 422, f"The body must be a JSON object such as {_EXAMPLE}. Received: {received}."
    if kind == "string_type":
        return 422, f"Field {field!r} must be a string. Received: {received}."
    if kind == "list_type":
        return 422, f"Field {field!r} must be a list of strings. Received: {received}."
    return 422, f"Field {field!r}: {e.get('msg', 'invalid')}."


def model_name(model_dir: str | os.PathLike) -> str:
    """``runs/imdb/model`` -> ``imdb``; any other directory -> its own name."""
    path = Path(model_dir).resolve()
    return path.parent.name if path.name == "model" and path.parent.name else path.name


def load_model(model: Any, runtime: str = "torch", onnx_path: str | os.PathLike | None = None):
    if runtime not in RUNTIMES:
        from .errors import expected_one_of

        raise expected_one_of("runtime", runtime, RUNTIMES)
    if not isinstance(model, (str, os.PathLike)):
        if runtime == "onnx":
            raise TextRNNError("runtime='onnx' needs a model directory (with the exported model.onnx), not a fitted object.")
        return model
    if runtime == "onnx":
        from .export import OnnxClassifier

        return OnnxClassifier(model, onnx_path)
    from .classifier import TextClassifier

    return TextClassifier.load(model)


def create_app(model: Any, max_text_chars: int = MAX_TEXT_CHARS, max_batch: int = MAX_BATCH,
               max_body_bytes: int = MAX_BODY_BYTES, runtime: str = "torch",
               onnx_path: str | os.PathLike | None = None, name: str | None = None):
    """The FastAPI app for ``model``: a model directory, or a fitted TextClassifier. The model is
    loaded here, once; ``runtime="onnx"`` runs ``model_dir/model.onnx`` (or ``onnx_path``)."""
    try:
        from fastapi import FastAPI, Request
        from fastapi.exceptions import RequestValidationError
        from fastapi.responses import FileResponse, JSONResponse
        from fastapi.staticfiles import StaticFiles
        from pydantic import BaseModel, ConfigDict, Field, StrictStr
        from starlette.exceptions import HTTPException as StarletteHTTPException
    except ImportError:
        raise TextRNNError("Serving needs FastAPI and uvicorn: pip install 'textrnn[serve]'") from None
    from . import __version__
    from .explain import explain

    for arg, value in (("max_text_chars", max_text_chars), ("max_batch", max_batch), ("max_body_bytes", max_body_bytes)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise TextRNNError(f"{arg} must be a positive integer. Received: {arg}={value!r}")
    clf = load_model(model, runtime, onnx_path)
    if name is None:
        name = model_name(model) if isinstance(model, (str, os.PathLike)) else "model"
    # one thread runs every forward: the model is shared and its forward is not promised to be
    # re-entrant, each forward already uses every core, and one thread's allocations stay in one
    # malloc arena (a pool of threads taking turns under a lock spreads them over many, and the
    # server's memory creeps up); the event loop stays free for /health and for refusing bad requests
    inference = ThreadPoolExecutor(max_workers=1, thread_name_prefix="textrnn-inference")

    async def run(fn, *args):
        return await asyncio.get_running_loop().run_in_executor(inference, fn, *args)

    labels = list(clf.classes_)

    class PredictRequest(BaseModel):
        model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"text": "A wonderful film."},
                                                                                   {"texts": ["Great.", "Awful."]}]})
        text: StrictStr | None = Field(None, description="one text")
        texts: list[StrictStr] | None = Field(None, description=f"several texts (at most {max_batch})")

    class ExplainRequest(BaseModel):
        model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"text": "A wonderful film."}]})
        text: StrictStr = Field(description="the text to explain")

    def check_text(text: str, field: str) -> None:
        if len(text) > max_text_chars:
            raise ApiError(413, f"Field {field!r} is {len(text):,} characters long; the limit is {max_text_chars:,}.")

    def probs(row) -> dict:
        return {str(c): float(p) for c, p in zip(labels, row)}

    app = FastAPI(title="textrnn", version=__version__,
                  description=f"Recurrent text classifier **{name}** ({runtime} runtime). Labels: {', '.join(map(str, labels))}.")
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    fields = {"/predict": ("text", "texts"), "/explain": ("text",)}

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        status, detail = validation_message(list(exc.errors()), fields.get(request.url.path, ("text",)),
                                            request.headers.get("content-type", ""))
        return JSONResponse({"detail": detail}, status_code=status)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return JSONResponse({"detail": exc.detail}, status_code=exc.status)

    @app.exception_handler(TextRNNError)
    async def _user_error(request: Request, exc: TextRNNError):
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        detail = exc.detail
        if exc.status_code == 400 and isinstance(exc.__cause__, UnicodeDecodeError):  # FastAPI's "error parsing the body"
            e = exc.__cause__
            detail = (f"The body is not valid JSON: byte 0x{e.object[e.start]:02x} at position {e.start} is not UTF-8. "
                      f"Send a UTF-8 JSON object such as {_EXAMPLE}.")
        elif exc.status_code == 400 and isinstance(exc.__cause__, RecursionError):
            detail = f"The body is not valid JSON: it is nested too deeply. Send a JSON object such as {_EXAMPLE}."
        elif exc.status_code == 404:
            detail = f"Not found: {request.url.path}. See /docs for the endpoints."
        elif exc.status_code == 405:
            detail = f"{request.method} is not allowed on {request.url.path}."
        return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception):
        # the client gets one sentence, never the traceback or the exception's text (paths, internals):
        # Starlette re-raises after this answer, so the server's log keeps the traceback
        return JSONResponse({"detail": f"Internal error while answering {request.method} {request.url.path}; "
                                       "the server's log has the details."}, status_code=500)

    @app.post("/predict", summary="Labels and probabilities for one text or a batch")
    async def predict(body: PredictRequest) -> dict:
        given = body.model_fields_set
        for field in ("text", "texts"):
            if field in given and getattr(body, field) is None:
                raise ApiError(422, f"Field {field!r} must be {'a string' if field == 'text' else 'a list of strings'}. Received: null.")
        if "text" in given and "texts" in given:
            raise ApiError(422, "Give either 'text' (one string) or 'texts' (a list of strings), not both.")
        if body.text is None and body.texts is None:
            raise ApiError(422, f"Missing field 'text' (one string) or 'texts' (a list of strings). Send a JSON object such as {_EXAMPLE}.")
        if body.texts is not None:
            if not body.texts:
                raise ApiError(422, "Field 'texts' is empty; send at least one text.")
            if len(body.texts) > max_batch:
                raise ApiError(413, f"Field 'texts' holds {len(body.texts):,} texts; the limit is {max_batch:,} per request.")
            for i, t in enumerate(body.texts):
                check_text(t, f"texts[{i}]")
            proba = await run(clf.predict_proba, body.texts)
            return {"model": name, "labels": [labels[i] for i in proba.argmax(axis=1)],
                    "probabilities": [probs(row) for row in proba]}
        check_text(body.text, "text")
        proba = (await run(clf.predict_proba, [body.text]))[0]
        k = int(proba.argmax())
        return {"model": name, "label": labels[k], "probability": float(proba[k]), "probabilities": probs(proba)}

    @app.post("/explain", summary="The prediction and each token's occlusion score")
    async def explain_text(body: ExplainRequest) -> dict:
        check_text(body.text, "text")
        result = await run(explain, clf, body.text)
        # a lone surrogate (half a character, "\udfff") is a valid JSON escape but cannot be written back
        # as UTF-8: the tokens echo it as U+FFFD, as a UTF-8 decoder would, instead of failing the answer
        result["tokens"] = [_LONE_SURROGATE.sub("\ufffd", t) for t in result["tokens"]]
        return {"model": name, **result}

    @app.get("/health", summary="Liveness")
    def health() -> dict:
        return {"status": "ok", "model": name, "runtime": runtime}

    @app.get("/model", summary="Labels, config, training metrics and versions")
    def model_info() -> dict:
        meta = getattr(clf, "meta_", None) or {}
        config = clf.config_.to_dict()
        return _finite({
            "name": name, "labels": labels, "runtime": runtime, "vocab_size": len(clf.vocab_),
            "config": config, "metrics": meta.get("metrics", {}),
            "version": {"textrnn": __version__, "format_version": meta.get("format_version"),
                        "trained_with": meta.get("versions", {})},
            "limits": {"max_text_chars": max_text_chars, "max_batch": max_batch, "max_body_bytes": max_body_bytes},
        })

    headers = {"Content-Security-Policy": "default-src 'self'; style-src 'self'; img-src 'self' data:",
               "X-Content-Type-Options": "nosniff"}

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(STATIC / "index.html", media_type="text/html", headers=headers)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.state.classifier, app.state.model_name = clf, name
    return app


def serve(model_dir: str | os.PathLike, host: str = "127.0.0.1", port: int = 8000, runtime: str = "torch",
          onnx_path: str | os.PathLike | None = None, max_text_chars: int = MAX_TEXT_CHARS,
          max_batch: int = MAX_BATCH, max_body_bytes: int = MAX_BODY_BYTES, log_level: str = "info") -> None:
    """Load the model and serve it with uvicorn until interrupted."""
    try:
        import uvicorn
    except ImportError:
        raise TextRNNError("Serving needs FastAPI and uvicorn: pip install 'textrnn[serve]'") from None
    app = create_app(model_dir, max_text_chars=max_text_chars, max_batch=max_batch, max_body_bytes=max_body_bytes,
                     runtime=runtime, onnx_path=onnx_path)
    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("serving on %s: anyone who can reach this machine can use the model", host)
    log.info("serving %s (%s runtime) on http://%s:%d/  (API docs: /docs)", app.state.model_name, runtime,
             f"[{host}]" if ":" in host else host, port)
    uvicorn.run(app, host=host, port=port, log_level=log_level)
