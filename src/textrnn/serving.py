"""The HTTP app: predictions, explanations and a small page, over one model loaded at start-up.

    POST /predict   {"text": "..."} or {"texts": ["...", ...]}  -> labels, probabilities, model name
    POST /explain   {"text": "..."}                            -> the prediction and a score per token
    GET  /health    liveness;  GET /model: labels, config, training metrics, versions, limits
    GET  /          the page (static/: HTML, JS and CSS served by the app; nothing from a CDN)
    GET  /docs      OpenAPI docs (Swagger UI; /redoc: ReDoc), their JS and CSS served by the app from
                    the installed fastapi-offline package: nothing from a CDN, so they work offline

Every mistake a client can make gets a 4xx answer ``{"detail": "one sentence naming the problem"}``:
a body over ``max_body_bytes`` (413), a body that is not JSON (400), a missing, unknown or mistyped
field (422), a text over ``max_text_chars`` or a batch over ``max_batch`` (413); a failure inside
the server gets a 500 with one sentence, never a traceback (that goes to the server's log).
Inference runs on one thread: the model is shared, and its forward is not promised to be
re-entrant (the onnxruntime session is, but one thread keeps the two runtimes alike). Requests to
/predict that arrive together run together: the ``Batcher`` merges their texts into one
``predict_proba`` call and hands each request its own rows, so concurrent clients share a forward
instead of queueing for one each; /explain has its own lane on the same thread, and the two lanes
share it by time.
"""

# no "from __future__ import annotations": FastAPI reads the request models, defined inside
# create_app, from the endpoints' annotations at definition time
import asyncio
import collections
import contextlib
import importlib.resources
import json
import logging
import math
import os
import re
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import torch

from . import __version__
from . import explain as occlusion  # the module: explain() is looked up per request
from .classifier import TextClassifier
from .errors import TextRNNError, expected_one_of
from .export import OnnxClassifier

log = logging.getLogger("textrnn")

STATIC = Path(__file__).parent / "static"
# the docs pages' files: swagger-ui-dist@5 and redoc@2, the ones FastAPI's own /docs and /redoc take
# from a CDN, as the fastapi-offline package ships them (its folder static/), served under DOCS_ASSETS
DOCS_ASSETS_PACKAGE = "fastapi_offline"
DOCS_FILES = ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png")
DOCS_ASSETS = "/docs-assets"
DOCS_MISSING = (
    "The API docs need Swagger UI's files, which are not installed: pip install fastapi-offline (or 'textrnn[serve]'); "
    "the schema is at /openapi.json."
)
MAX_TEXT_CHARS = 50_000  # the longest IMDB review is about 14,000 characters
MAX_BATCH = 128
MAX_BODY_BYTES = 1_000_000
# the most texts one merged forward takes: predict_proba's own batch on a CPU with the fast kernel
# (FAST_CPU_INFERENCE_BATCH), so a merged call is one forward, not several side by side
BATCH_TEXTS = 512
# a /predict request is held for others to join it while they keep coming: until none has come
# for BATCH_GAP seconds, and BATCH_WAIT at most after it came. A lone request waits BATCH_GAP;
# requests that queued behind a running forward have waited already and go at once
BATCH_WAIT = 0.02
BATCH_GAP = 0.002
RUNTIMES = ("torch", "onnx")
# `serve`'s intra-op threads for the inference thread (torch's, or the onnxruntime session's): a
# merged forward is hundreds of small steps, each too small to share out, and a helper thread
# spinning between them holds a core that the event loop needs
INFERENCE_THREADS = 1
# oneDNN, and PyTorch's ideep layer over it, keep a compiled kernel per matrix shape (1,024 each by
# default). A server's forwards take every row count and length, so both caches fill with shapes
# seen once and the process grows by hundreds of MB until they are full, which reads as a leak.
# `serve` keeps this many of each: a shape evicted and seen again is compiled again
KERNEL_CACHE_SHAPES = 64
KERNEL_CACHE_VARIABLES = ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY")
_EXAMPLE = '{"text": "A wonderful film."}'
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")  # valid in a JSON string ("\\udfff"), not encodable as UTF-8
_JSON_TYPES = {
    bool: "a boolean",
    int: "a number",
    float: "a number",
    str: "a string",
    list: "an array",
    dict: "an object",
    type(None): "null",
}


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
        body = json.dumps({"detail": f"The request body is {size} bytes; the limit is {self.max_bytes:,} bytes."}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers + [(b"connection", b"close")] * close})
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


class Batcher:
    """The one inference thread, fed by two lanes: /predict requests, merged, and other calls
    (/explain), one at a time.

    A forward's cost is mostly per time step, not per text (each step is one matrix product over
    all the rows), so requests that arrive together run as one ``predict(texts)`` call over all
    their texts, at most ``max_texts`` of them (one request with more runs alone), and each request
    gets back exactly its own rows. Requests are held for company while more keep arriving: until
    none has arrived for ``gap`` seconds, and ``wait`` seconds at most after the oldest came.
    Clients answered by one forward send their next requests in a burst, and gathering the burst
    makes one forward of it instead of several; a lone request waits only ``gap``, and requests
    that queued behind a running forward have waited already and go at once.

    The two lanes share the thread by time while both hold work: the next job comes from the lane
    that has had less of it since they began competing (a merged forward may be worth several
    explanations, a long /explain several forwards). So predictions wait behind about one forward's
    time of explaining, plus one explanation, and a flood of predictions cannot starve /explain.
    One thread, as before batching: the forward is not promised re-entrant, and one thread's
    allocations stay in one malloc arena (threads taking turns spread them over many, and the
    server's memory creeps up).

    A merged call that fails is run again one request at a time, so a request that breaks the model
    fails alone and the others in its batch get their answers. Jobs are ``concurrent.futures``
    futures: a cancelled one (the client went away) is dropped before it runs."""

    def __init__(
        self,
        predict,
        max_texts: int = BATCH_TEXTS,
        wait: float = BATCH_WAIT,
        gap: float = BATCH_GAP,
        name: str = "textrnn-inference",
        on_start=None,
    ):
        if not isinstance(max_texts, int) or isinstance(max_texts, bool) or max_texts < 1:
            raise TextRNNError(f"batch_texts must be a positive integer. Received: batch_texts={max_texts!r}")
        for arg, value in (("batch_wait", wait), ("batch_gap", gap)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise TextRNNError(f"{arg} must be a number of seconds from 0 to 1. Received: {arg}={value!r}")
        self.predict_fn, self.max_texts, self.name, self.on_start = predict, max_texts, name, on_start
        self.wait, self.gap = float(wait), min(float(gap), float(wait))
        self._cond = threading.Condition()
        self._predictions: collections.deque = collections.deque()  # (texts, future, enqueued at)
        self._calls: collections.deque = collections.deque()  # (fn, args, future)
        self._spent = {"predict": 0.0, "call": 0.0}  # each lane's time on the thread while both held work
        self._thread: threading.Thread | None = None
        self._closing = False
        self.stats = {"forwards": 0, "requests": 0, "texts": 0, "calls": 0, "largest": 0, "retried_alone": 0}

    # ------------------------------------------------------------------ the event loop's side
    def _submit(self, lane: collections.deque, item: tuple) -> Future:
        with self._cond:
            if self._thread is None or not self._thread.is_alive():
                self._closing = False
                self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
                self._thread.start()
            lane.append(item)
            self._cond.notify()
        return item[1] if lane is self._predictions else item[2]

    async def predict(self, texts: list[str]):
        """The probabilities (len(texts), K) for ``texts``, computed with whatever else is waiting."""
        return await asyncio.wrap_future(self._submit(self._predictions, (texts, Future(), time.monotonic())))

    async def call(self, fn, *args):
        """``fn(*args)`` on the inference thread, in the other lane (taking turns with predictions)."""
        return await asyncio.wrap_future(self._submit(self._calls, (fn, args, Future())))

    def close(self, timeout: float | None = 30) -> None:
        """Finish what is queued, then stop the thread (a later request starts a new one)."""
        with self._cond:
            self._closing = True
            thread = self._thread
            self._cond.notify()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    # ------------------------------------------------------------------ the inference thread
    def _take(self) -> tuple[str, list]:
        """The next work, under the lock: ("call", [job]), ("predict", jobs) or ("stop", [])."""
        while not (self._predictions or self._calls):
            if self._closing:
                return "stop", []
            self._cond.wait()
        if not (self._calls and self._predictions):  # a lane alone owes nothing to the other
            self._spent = {"predict": 0.0, "call": 0.0}
        if self._calls and (not self._predictions or self._spent["call"] <= self._spent["predict"]):
            return "call", [self._calls.popleft()]
        if self.gap:  # while others keep coming (within `gap` of the last), for `wait` at most after the oldest
            deadline = self._predictions[0][2] + self.wait
            while not self._closing and sum(len(j[0]) for j in self._predictions) < self.max_texts:
                left = min(deadline, self._predictions[-1][2] + self.gap) - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
        jobs = [self._predictions.popleft()]
        texts = len(jobs[0][0])
        while self._predictions and texts + len(self._predictions[0][0]) <= self.max_texts:
            texts += len(self._predictions[0][0])
            jobs.append(self._predictions.popleft())
        return "predict", jobs

    def _loop(self) -> None:
        if self.on_start is not None:  # per-thread settings (torch's thread count) for every forward here
            self.on_start()
        while True:
            with self._cond:
                kind, jobs = self._take()
            if kind == "stop":
                return
            t0 = time.perf_counter()
            self._run(kind, jobs)
            self._spent[kind] += time.perf_counter() - t0

    def _run(self, kind: str, jobs: list) -> None:
        if kind == "call":
            fn, args, future = jobs[0]
            if future.set_running_or_notify_cancel():
                self.stats["calls"] += 1
                try:
                    future.set_result(fn(*args))
                except BaseException as e:  # noqa: BLE001 - the request's own failure: its answer
                    future.set_exception(e)
            return
        jobs = [j for j in jobs if j[1].set_running_or_notify_cancel()]
        if jobs:
            self._run_predictions(jobs)

    def _run_predictions(self, jobs: list) -> None:
        texts = [t for job in jobs for t in job[0]]
        try:
            proba = self.predict_fn(texts)
        except BaseException as e:  # noqa: BLE001
            if len(jobs) == 1:
                jobs[0][1].set_exception(e)
                return
            # one request's texts may be what broke the merged call: each request alone, so only it fails
            self.stats["retried_alone"] += 1
            for job_texts, future, _ in jobs:
                try:
                    future.set_result(self.predict_fn(job_texts))
                except BaseException as e:  # noqa: BLE001
                    future.set_exception(e)
            return
        s = self.stats
        s["forwards"] += 1
        s["requests"] += len(jobs)
        s["texts"] += len(texts)
        s["largest"] = max(s["largest"], len(texts))
        start = 0
        for job_texts, future, _ in jobs:
            future.set_result(proba[start : start + len(job_texts)].copy())  # its own rows, not a view of the others'
            start += len(job_texts)


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


def load_model(model: Any, runtime: str = "torch", onnx_path: str | os.PathLike | None = None, threads: int | None = None):
    """The classifier to serve: ``model`` itself when fitted, else loaded from its directory; with
    ``runtime="onnx"`` an onnxruntime session with ``threads`` intra-op threads (None: its default)."""
    if runtime not in RUNTIMES:
        raise expected_one_of("runtime", runtime, RUNTIMES)
    if not isinstance(model, (str, os.PathLike)):
        if runtime == "onnx":
            raise TextRNNError("runtime='onnx' needs a model directory (with the exported model.onnx), not a fitted object.")
        return model
    if runtime == "onnx":
        return OnnxClassifier(model, onnx_path, num_threads=threads)
    return TextClassifier.load(model)


def create_app(
    model: Any,
    max_text_chars: int = MAX_TEXT_CHARS,
    max_batch: int = MAX_BATCH,
    max_body_bytes: int = MAX_BODY_BYTES,
    runtime: str = "torch",
    onnx_path: str | os.PathLike | None = None,
    name: str | None = None,
    batch_texts: int = BATCH_TEXTS,
    batch_wait: float = BATCH_WAIT,
    batch_gap: float = BATCH_GAP,
    inference_threads: int | None = None,
):
    """The FastAPI app for ``model``: a model directory, or a fitted TextClassifier. The model is
    loaded here, once; ``runtime="onnx"`` runs ``model_dir/model.onnx`` (or ``onnx_path``).
    Concurrent /predict requests are merged into forwards of up to ``batch_texts`` texts, a request
    being held while others keep arriving (none for ``batch_gap`` seconds ends it, ``batch_wait``
    at most; see ``Batcher``). ``inference_threads``: the intra-op threads of that one thread
    (None: the runtime's default; torch's count also becomes the default of threads started later)."""
    try:
        from fastapi import FastAPI  # noqa: PLC0415  (optional extra: textrnn[serve])
    except ImportError:
        raise TextRNNError("Serving needs FastAPI and uvicorn: pip install 'textrnn[serve]'") from None

    for arg, value in (
        ("max_text_chars", max_text_chars),
        ("max_batch", max_batch),
        ("max_body_bytes", max_body_bytes),
        ("inference_threads", 1 if inference_threads is None else inference_threads),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise TextRNNError(f"{arg} must be a positive integer. Received: {arg}={value!r}")
    clf = load_model(model, runtime, onnx_path, threads=inference_threads)
    if name is None:
        name = model_name(model) if isinstance(model, (str, os.PathLike)) else "model"
    # one thread runs every forward (see Batcher); the event loop stays free for /health and for
    # refusing bad requests, which never reach the model. clf.predict_proba is looked up per call,
    # so a test can wrap it on the classifier after the app is made
    on_start = None
    if inference_threads is not None and runtime == "torch":
        on_start = lambda: torch.set_num_threads(inference_threads)  # noqa: E731 - set on the thread that runs the forwards
    batcher = Batcher(lambda texts: clf.predict_proba(texts), batch_texts, batch_wait, batch_gap, on_start=on_start)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        await asyncio.get_running_loop().run_in_executor(None, batcher.close)

    labels = list(clf.classes_)

    PredictRequest, ExplainRequest = _request_models(max_batch)

    def check_text(text: str, field: str) -> None:
        if len(text) > max_text_chars:
            raise ApiError(413, f"Field {field!r} is {len(text):,} characters long; the limit is {max_text_chars:,}.")

    app = FastAPI(
        title="textrnn",
        version=__version__,
        lifespan=lifespan,
        description=f"Recurrent text classifier **{name}** ({runtime} runtime). Labels: {', '.join(map(str, labels))}.",
        docs_url=None,  # /docs and /redoc are _add_docs_routes': their files from this machine, not a CDN
        redoc_url=None,
    )
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    fields = {"/predict": ("text", "texts"), "/explain": ("text",)}

    _add_error_handlers(app, fields)
    _add_prediction_routes(app, clf, name, batcher, max_batch, check_text, PredictRequest, ExplainRequest)
    limits = {"max_text_chars": max_text_chars, "max_batch": max_batch, "max_body_bytes": max_body_bytes}
    _add_info_routes(app, clf, name, runtime, limits, batcher, inference_threads)
    _add_docs_routes(app)
    app.state.classifier, app.state.model_name, app.state.batcher = clf, name, batcher
    return app


def _request_models(max_batch: int):
    """The request bodies of /predict and /explain (pydantic models, for FastAPI's checks and docs)."""
    from pydantic import BaseModel, ConfigDict, Field, StrictStr  # noqa: PLC0415  (optional extra: textrnn[serve])

    class PredictRequest(BaseModel):
        model_config = ConfigDict(
            extra="forbid", json_schema_extra={"examples": [{"text": "A wonderful film."}, {"texts": ["Great.", "Awful."]}]}
        )
        text: StrictStr | None = Field(None, description="one text")
        texts: list[StrictStr] | None = Field(None, description=f"several texts (at most {max_batch})")

    class ExplainRequest(BaseModel):
        model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"text": "A wonderful film."}]})
        text: StrictStr = Field(description="the text to explain")

    return PredictRequest, ExplainRequest


def _add_prediction_routes(app, clf, name: str, batcher: Batcher, max_batch: int, check_text, PredictRequest, ExplainRequest) -> None:
    """POST /predict (merged into shared forwards by ``batcher``) and POST /explain (its own lane)."""
    labels = list(clf.classes_)

    def probs(row) -> dict:
        return {str(c): float(p) for c, p in zip(labels, row)}

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
            proba = await batcher.predict(body.texts)
            return {"model": name, "labels": clf.labels_from(proba), "probabilities": [probs(row) for row in proba]}
        text = body.text or ""  # a string here (checked above): the same text, typed as one
        check_text(text, "text")
        proba = (await batcher.predict([text]))[0]
        if clf.multilabel_:  # the labels over their thresholds
            return {"model": name, "labels": clf.labels_from(proba[None, :])[0], "probabilities": probs(proba)}
        k = int(proba.argmax())
        return {"model": name, "label": labels[k], "probability": float(proba[k]), "probabilities": probs(proba)}

    @app.post("/explain", summary="The prediction and each token's occlusion score")
    async def explain_text(body: ExplainRequest) -> dict:
        check_text(body.text, "text")
        result = await batcher.call(occlusion.explain, clf, body.text)
        # a lone surrogate (half a character, "\udfff") is a valid JSON escape but cannot be written back
        # as UTF-8: the tokens echo it as U+FFFD, as a UTF-8 decoder would, instead of failing the answer
        result["tokens"] = [_LONE_SURROGATE.sub("\ufffd", t) for t in result["tokens"]]
        return {"model": name, **result}


def _add_error_handlers(app, fields: dict) -> None:
    """Every failure as ``{"detail": one sentence}`` with its status: validation, our own errors,
    Starlette's, and any bug (500, never a traceback)."""
    from fastapi import Request  # noqa: PLC0415  (optional extra: textrnn[serve])
    from fastapi.exceptions import RequestValidationError  # noqa: PLC0415
    from fastapi.responses import JSONResponse  # noqa: PLC0415
    from starlette.exceptions import HTTPException as StarletteHTTPException  # noqa: PLC0415

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        status, detail = validation_message(
            list(exc.errors()), fields.get(request.url.path, ("text",)), request.headers.get("content-type", "")
        )
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
            detail = (
                f"The body is not valid JSON: byte 0x{e.object[e.start]:02x} at position {e.start} is not UTF-8. "
                f"Send a UTF-8 JSON object such as {_EXAMPLE}."
            )
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
        return JSONResponse(
            {"detail": f"Internal error while answering {request.method} {request.url.path}; the server's log has the details."},
            status_code=500,
        )


def _add_info_routes(app, clf, name: str, runtime: str, limits: dict, batcher: Batcher, inference_threads: int | None) -> None:
    """GET /health, /model and the page (/ and its static files)."""
    from fastapi.responses import FileResponse  # noqa: PLC0415  (optional extra: textrnn[serve])
    from fastapi.staticfiles import StaticFiles  # noqa: PLC0415

    labels = list(clf.classes_)

    @app.get("/health", summary="Liveness")
    def health() -> dict:
        return {"status": "ok", "model": name, "runtime": runtime}

    @app.get("/model", summary="Labels, config, training metrics and versions")
    def model_info() -> dict:
        meta = getattr(clf, "meta_", None) or {}
        config = clf.config_.to_dict()
        return _finite(
            {
                "name": name,
                "labels": labels,
                "runtime": runtime,
                "vocab_size": len(clf.vocab_),
                "config": config,
                "metrics": meta.get("metrics", {}),
                "version": {"textrnn": __version__, "format_version": meta.get("format_version"), "trained_with": meta.get("versions", {})},
                "limits": limits,
                # how /predict requests are merged, and what has been merged since start-up
                "batching": {
                    "batch_texts": batcher.max_texts,
                    "batch_wait_s": batcher.wait,
                    "batch_gap_s": batcher.gap,
                    "inference_threads": inference_threads,
                    **batcher.stats,
                },
            }
        )

    headers = {"Content-Security-Policy": "default-src 'self'; style-src 'self'; img-src 'self' data:", "X-Content-Type-Options": "nosniff"}

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(STATIC / "index.html", media_type="text/html", headers=headers)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")


def docs_assets() -> Path | None:
    """The folder of the docs pages' files (DOCS_FILES) in the installed fastapi-offline package, or
    None where that package, or one of the files, is missing."""
    try:
        folder = Path(str(importlib.resources.files(DOCS_ASSETS_PACKAGE) / "static"))
    except ImportError:
        return None
    return folder if all((folder / file).is_file() for file in DOCS_FILES) else None


def _add_docs_routes(app) -> None:
    """GET /docs (Swagger UI), its OAuth2 redirect page and /redoc (ReDoc), as FastAPI's "Custom Docs
    UI Static Assets (Self-Hosting)" recipe has them: the pages load their JS and CSS from this app
    (DOCS_ASSETS), which serves them from the installed package, so the docs work offline. Without
    that package the server still starts, and both pages say in one line how to install it."""
    from fastapi import Request  # noqa: PLC0415  (optional extra: textrnn[serve])
    from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html  # noqa: PLC0415
    from fastapi.responses import PlainTextResponse  # noqa: PLC0415
    from fastapi.staticfiles import StaticFiles  # noqa: PLC0415

    folder = docs_assets()
    if folder is None:
        log.warning("%s", DOCS_MISSING)

        @app.get("/docs", include_in_schema=False)
        @app.get("/redoc", include_in_schema=False)
        def no_docs():
            return PlainTextResponse(DOCS_MISSING, status_code=503)

        return
    app.mount(DOCS_ASSETS, StaticFiles(directory=folder), name="docs-assets")
    openapi_url, oauth2_redirect_url = app.openapi_url, app.swagger_ui_oauth2_redirect_url

    @app.get("/docs", include_in_schema=False)
    def swagger_ui(request: Request):
        root = request.scope.get("root_path", "").rstrip("/")  # behind a proxy's prefix, as FastAPI's own /docs
        return get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=root + oauth2_redirect_url,
            swagger_js_url=f"{root}{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png",
        )

    @app.get(oauth2_redirect_url, include_in_schema=False)
    def swagger_ui_redirect():
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    def redoc(request: Request):
        root = request.scope.get("root_path", "").rstrip("/")
        page = get_redoc_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{DOCS_ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png",
            with_google_fonts=False,
        )
        # ReDoc's footer asks for the Redocly logo from its CDN: images from this server only
        page.headers["Content-Security-Policy"] = "img-src 'self' data:"
        return page


def bound_kernel_caches(shapes: int = KERNEL_CACHE_SHAPES) -> dict:
    """Bound oneDNN's and ideep's per-shape kernel caches for this process (see KERNEL_CACHE_SHAPES),
    unless the environment already sets them. Both read their variable once, at their first kernel:
    this must run before the model's first forward. Returns the settings in force."""
    for var in KERNEL_CACHE_VARIABLES:
        os.environ.setdefault(var, str(shapes))
    return {var: os.environ[var] for var in KERNEL_CACHE_VARIABLES}


def serve(
    model_dir: str | os.PathLike,
    host: str = "127.0.0.1",
    port: int = 8000,
    runtime: str = "torch",
    onnx_path: str | os.PathLike | None = None,
    max_text_chars: int = MAX_TEXT_CHARS,
    max_batch: int = MAX_BATCH,
    max_body_bytes: int = MAX_BODY_BYTES,
    log_level: str = "info",
    batch_texts: int = BATCH_TEXTS,
    batch_wait: float = BATCH_WAIT,
    batch_gap: float = BATCH_GAP,
    inference_threads: int | None = INFERENCE_THREADS,
) -> None:
    """Load the model and serve it with uvicorn until interrupted: a process of its own, so the
    kernel caches (``bound_kernel_caches``) and the intra-op threads (INFERENCE_THREADS) are set
    for the whole process."""
    try:
        import uvicorn  # noqa: PLC0415  (optional extra: textrnn[serve])
    except ImportError:
        raise TextRNNError("Serving needs FastAPI and uvicorn: pip install 'textrnn[serve]'") from None
    bound_kernel_caches()
    if runtime == "torch" and inference_threads is not None:
        torch.set_num_threads(inference_threads)
    app = create_app(
        model_dir,
        max_text_chars=max_text_chars,
        max_batch=max_batch,
        max_body_bytes=max_body_bytes,
        runtime=runtime,
        onnx_path=onnx_path,
        batch_texts=batch_texts,
        batch_wait=batch_wait,
        batch_gap=batch_gap,
        inference_threads=inference_threads,
    )
    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("serving on %s: anyone who can reach this machine can use the model", host)
    log.info(
        "serving %s (%s runtime) on http://%s:%d/  (API docs: /docs)",
        app.state.model_name,
        runtime,
        f"[{host}]" if ":" in host else host,
        port,
    )
    uvicorn.run(app, host=host, port=port, log_level=log_level)
