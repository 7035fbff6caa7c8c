import re
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="serving needs FastAPI: pip install 'textrnn[serve]'")
pytest.importorskip("httpx", reason="FastAPI's test client needs httpx")

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # newer Starlette asks for httpx2 instead of httpx
    from fastapi.testclient import TestClient

from conftest import tiny_sentiment
from textrnn import TextClassifier
from textrnn.cli import main
from textrnn.serving import STATIC, create_app

FAST = dict(
    embedding_dim=16,
    hidden_size=16,
    epochs=20,
    batch_size=8,
    learning_rate=0.02,
    schedule="constant",
    min_freq=1,
    dropout=0.0,
    embedding_dropout=0.0,
    early_stopping_patience=None,
    precision="float32",
)  # float32 like onnxruntime: the two apps must answer alike
LIMITS = dict(max_text_chars=200, max_batch=4, max_body_bytes=4000)


@pytest.fixture(autouse=True)
def _process_settings(monkeypatch):
    """serve() sets the kernel cache variables and torch's threads for the process: put them back."""
    import torch

    from textrnn.serving import KERNEL_CACHE_VARIABLES

    for var in KERNEL_CACHE_VARIABLES:
        monkeypatch.setenv(var, "recorded")  # records the original (or its absence) for the teardown
        monkeypatch.delenv(var)
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    texts, labels = tiny_sentiment()
    clf = TextClassifier(**FAST).fit(texts, labels, progress=False)
    d = tmp_path_factory.mktemp("serving") / "sentiment" / "model"
    clf.save(d, extra={"metrics": {"test": {"accuracy": 1.0, "loss": float("nan")}}})
    return d


@pytest.fixture(scope="module")
def client(model_dir):
    with TestClient(create_app(model_dir, **LIMITS), raise_server_exceptions=False) as c:
        yield c


def test_predict_one_text(client, model_dir):
    r = client.post("/predict", json={"text": "a good film"})
    assert r.status_code == 200
    body = r.json()
    assert body["model"] == "sentiment" and body["label"] == "pos"
    assert set(body["probabilities"]) == {"neg", "pos"} and sum(body["probabilities"].values()) == pytest.approx(1)
    expected = TextClassifier.load(model_dir).predict_proba(["a good film"])[0]
    assert body["probability"] == pytest.approx(expected[1], abs=1e-6)


def test_predict_a_batch(client):
    r = client.post("/predict", json={"texts": ["a good film", "a bad film", ""]})
    assert r.status_code == 200
    body = r.json()
    assert body["labels"][:2] == ["pos", "neg"] and len(body["probabilities"]) == 3


def test_explain(client):
    r = client.post("/explain", json={"text": "truly great acting"})
    assert r.status_code == 200
    body = r.json()
    assert body["tokens"] == ["truly", "great", "acting"] and len(body["scores"]) == 3
    assert body["label"] == "pos" and body["model"] == "sentiment" and int(np.argmax(body["scores"])) == 1


def test_health_model_docs_and_openapi(client):
    assert client.get("/health").json() == {"status": "ok", "model": "sentiment", "runtime": "torch"}
    info = client.get("/model").json()
    assert info["labels"] == ["neg", "pos"] and info["config"]["model"]["embedding_dim"] == 16
    assert info["metrics"]["test"] == {"accuracy": 1.0, "loss": None}  # NaN is not JSON: null
    assert info["version"]["textrnn"] and info["version"]["format_version"] == 1
    assert info["limits"] == LIMITS
    assert client.get("/docs").status_code == 200
    assert set(client.get("/openapi.json").json()["paths"]) >= {"/predict", "/explain", "/health", "/model"}


def test_the_page_and_its_files_need_nothing_from_outside(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in r.headers["content-security-policy"]
    assert 'id="text"' in r.text and 'id="classify"' in r.text and 'id="label"' in r.text
    for name in ("app.js", "style.css"):
        assert client.get(f"/static/{name}").status_code == 200
    for path in STATIC.iterdir():
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", path.read_text()), f"{path.name} refers outside"


BAD = [
    # (description, request kwargs, status, words the message must contain)
    ("invalid JSON", dict(content=b'{"text": ', headers={"content-type": "application/json"}), 400, ["not valid JSON"]),
    ("no body", dict(content=b""), 400, ["no body"]),
    ("not JSON content", dict(content=b"a good film", headers={"content-type": "text/plain"}), 415, ["Content-Type"]),
    ("missing field", dict(json={}), 422, ["Missing field", "'text'", "'texts'"]),
    ("unknown field", dict(json={"txt": "a"}), 422, ["Unknown field 'txt'"]),
    ("body not an object", dict(json=["a good film"]), 422, ["JSON object", "array"]),
    ("text not a string", dict(json={"text": 5}), 422, ["'text'", "must be a string", "number"]),
    ("text null", dict(json={"text": None}), 422, ["'text'", "null"]),
    ("texts not a list", dict(json={"texts": "a good film"}), 422, ["'texts'", "list of strings"]),
    ("an item not a string", dict(json={"texts": ["a", {"x": 1}]}), 422, ["'texts[1]'", "must be a string", "object"]),
    ("both fields", dict(json={"text": "a", "texts": ["b"]}), 422, ["not both"]),
    ("empty batch", dict(json={"texts": []}), 422, ["'texts' is empty"]),
    ("text too long", dict(json={"text": "a" * 201}), 413, ["'text'", "201", "200"]),
    ("a batch text too long", dict(json={"texts": ["a", "b" * 201]}), 413, ["'texts[1]'", "200"]),
    ("batch too big", dict(json={"texts": ["a"] * 5}), 413, ["5 texts", "limit is 4"]),
    ("body too big", dict(json={"text": "a" * 5000}), 413, ["body", "4,000 bytes"]),
    (
        "body too big, streamed",
        dict(content=iter([b'{"text": "', b"a" * 4100, b'"}']), headers={"content-type": "application/json"}),
        413,
        ["body", "4,000 bytes"],
    ),
]


@pytest.mark.parametrize("what,request_kwargs,status,words", BAD, ids=[b[0] for b in BAD])
def test_bad_predict_requests_get_a_clear_4xx(client, what, request_kwargs, status, words):
    r = client.post("/predict", **request_kwargs)
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, str)  # one message, not pydantic's list
    for w in words:
        assert w in detail, (w, detail)


@pytest.mark.parametrize(
    "body,status,words",
    [
        ({}, 422, ["Missing field 'text'"]),
        ({"texts": ["a"]}, 422, ["Unknown field 'texts'"]),
        ({"text": ["a"]}, 422, ["must be a string"]),
        ({"text": "a" * 201}, 413, ["200"]),
    ],
)
def test_bad_explain_requests_get_a_clear_4xx(client, body, status, words):
    r = client.post("/explain", json=body)
    assert r.status_code == status and all(w in r.json()["detail"] for w in words), r.text


def test_wrong_path_and_method(client):
    assert client.get("/nothing").status_code == 404 and "/docs" in client.get("/nothing").json()["detail"]
    r = client.get("/predict")
    assert r.status_code == 405 and "GET" in r.json()["detail"]


def test_concurrent_requests_get_their_own_answers(client):
    texts = [f"{w} film number {i}" for i, w in enumerate(["good", "bad", "great", "awful"] * 8)]
    alone = {t: client.post("/predict", json={"text": t}).json() for t in texts}
    alone_explained = client.post("/explain", json={"text": texts[0]}).json()

    def ask(t):
        if t == texts[0]:
            return t, client.post("/explain", json={"text": t}).json()
        return t, client.post("/predict", json={"text": t}).json()

    with ThreadPoolExecutor(max_workers=32) as pool:
        answers = list(pool.map(ask, texts * 2))
    assert len(answers) == 64
    for t, got in answers:
        expected = alone_explained if t == texts[0] else alone[t]
        assert got["label"] == expected["label"]
        assert got["probabilities"] == pytest.approx(expected["probabilities"], abs=1e-6)


def test_onnx_runtime_app_answers_like_the_torch_one(model_dir, client, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from textrnn.export import export_onnx

    export_onnx(model_dir, tmp_path / "m.onnx", check=False)
    with TestClient(create_app(model_dir, runtime="onnx", onnx_path=tmp_path / "m.onnx")) as onnx_client:
        assert onnx_client.get("/health").json()["runtime"] == "onnx"
        body = {"texts": ["a good film", "truly awful acting and a bad plot", ""]}
        a, b = onnx_client.post("/predict", json=body).json(), client.post("/predict", json=body).json()
        assert a["labels"] == b["labels"]
        for pa, pb in zip(a["probabilities"], b["probabilities"]):
            assert pa == pytest.approx(pb, abs=1e-5)
        e = onnx_client.post("/explain", json={"text": "truly great acting"}).json()
        assert e["scores"] == pytest.approx(client.post("/explain", json={"text": "truly great acting"}).json()["scores"], abs=1e-5)


def test_a_fitted_classifier_can_be_served_directly():
    texts, labels = tiny_sentiment()
    clf = TextClassifier(**{**FAST, "epochs": 2}).fit(texts, labels, progress=False)
    with TestClient(create_app(clf, name="fresh")) as c:
        assert c.post("/predict", json={"text": "good"}).json()["model"] == "fresh"
        assert c.get("/model").json()["metrics"] == {}


def test_cli_serve_binds_localhost_by_default(model_dir, monkeypatch):
    import uvicorn

    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(kw, app=app))
    assert main(["serve", str(model_dir), "--port", "8123", "--max-batch", "7"]) == 0
    assert seen["host"] == "127.0.0.1" and seen["port"] == 8123
    with TestClient(seen["app"]) as c:
        assert c.get("/model").json()["limits"]["max_batch"] == 7


def test_cli_serve_errors_are_one_line(tmp_path, capsys):
    assert main(["serve", str(tmp_path / "missing")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["serve", str(tmp_path), "--runtime", "onnx"]) == 2
    assert "missing config.json" in capsys.readouterr().err


# ----------------------------------------------------------------------------- hostile clients (issue 6)
def test_serve_binds_localhost_unless_told_otherwise(model_dir, monkeypatch, caplog):
    import uvicorn

    from textrnn.serving import serve

    seen = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.append(kw))
    serve(model_dir)
    assert seen[-1]["host"] == "127.0.0.1"
    with caplog.at_level("WARNING", logger="textrnn"):
        serve(model_dir, host="0.0.0.0")
    assert seen[-1]["host"] == "0.0.0.0" and "anyone who can reach this machine" in caplog.text


@pytest.mark.parametrize(
    "path,body", [("/explain", {"text": "a" * 5000}), ("/explain", {"texts": ["a"] * 2000}), ("/model", {"text": "a" * 5000})]
)
def test_the_body_cap_holds_on_every_path(client, path, body):
    r = client.post(path, json=body)
    assert r.status_code == 413 and "4,000 bytes" in r.json()["detail"]


@pytest.mark.parametrize(
    "raw,words",
    [
        (b'{"text": "caf\xe9"}', ["not UTF-8", "0xe9", "position 13"]),  # Latin-1, not UTF-8
        (b"[" * 3000, ["nested too deeply"]),
        (b'{"text": ' + b"[" * 1500 + b"]" * 1500 + b"}", ["nested too deeply"]),
    ],
)
def test_bodies_json_cannot_decode_get_a_400_that_says_why(client, raw, words):
    for path in ("/predict", "/explain"):
        r = client.post(path, content=raw, headers={"content-type": "application/json"})
        assert r.status_code == 400 and all(w in r.json()["detail"] for w in words), r.text


def test_a_lone_surrogate_is_predicted_and_explained_not_a_500(client):
    # "\udfff" is a valid JSON escape (half of a character cut in two) but not encodable as UTF-8:
    # /explain echoes tokens, and used to fail writing its answer
    raw = {"content": b'{"text": "good \\udfff film\\ud83d"}', "headers": {"content-type": "application/json"}}
    predicted = client.post("/predict", **raw)
    explained = client.post("/explain", **raw)
    assert predicted.status_code == 200 and explained.status_code == 200, explained.text
    body = explained.json()
    assert "good" in body["tokens"] and all("\ufffd" in t or t.isascii() for t in body["tokens"])
    assert body["probabilities"] == pytest.approx(predicted.json()["probabilities"], abs=1e-6)


def test_a_failure_inside_the_server_answers_500_with_one_sentence_and_no_traceback(model_dir, monkeypatch, caplog):
    import textrnn.explain

    secret = "/home/someone/private/weights.safetensors"

    def broken(*args, **kwargs):
        raise RuntimeError(f"cannot read {secret}")

    clf = TextClassifier.load(model_dir)
    monkeypatch.setattr(clf, "predict_proba", broken)
    monkeypatch.setattr(textrnn.explain, "explain", broken)
    with TestClient(create_app(clf), raise_server_exceptions=False) as c:
        for path, body in (
            ("/predict", {"text": "a good film"}),
            ("/predict", {"texts": ["a", "b"]}),
            ("/explain", {"text": "a good film"}),
        ):
            r = c.post(path, json=body)
            assert r.status_code == 500 and r.headers["content-type"] == "application/json"
            detail = r.json()["detail"]
            assert detail.startswith("Internal error while answering POST " + path) and "log" in detail
            for leak in ("Traceback", "RuntimeError", secret, 'File "', ".py"):
                assert leak not in r.text
        assert c.get("/health").status_code == 200  # and it goes on serving


@pytest.fixture()
def real_server(model_dir):
    """The app under uvicorn on 127.0.0.1 in a thread: sockets, unlike the TestClient, can be reset."""
    import threading
    import time

    import uvicorn

    def start(**limits):
        server = uvicorn.Server(uvicorn.Config(create_app(model_dir, **limits), host="127.0.0.1", port=0, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.started
        started.append((server, thread))
        return f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"

    started = []
    yield start
    for server, thread in started:
        server.should_exit = True
        thread.join(10)


def test_a_body_over_the_cap_gets_its_413_over_a_real_socket(real_server):
    # Closing a socket with unread data resets it, and the reset used to destroy the 413 before a
    # client that writes its whole body first (httpx, requests) could read it: a dropped connection
    import asyncio

    import httpx

    url = real_server(max_body_bytes=200_000)
    body = b'{"text": "' + b"a" * 3_000_000 + b'"}'  # 15 times the cap: read and dropped, the connection kept

    async def chunks():
        for _ in range(30):
            yield b"a" * 100_000

    async def ask():
        async with httpx.AsyncClient(base_url=url, trust_env=False, timeout=30) as c:
            many = await asyncio.gather(
                *(c.post("/predict", content=body, headers={"content-type": "application/json"}) for _ in range(8)), return_exceptions=True
            )
            streamed = await c.post("/predict", content=chunks(), headers={"content-type": "application/json"})
            after = await c.post("/predict", json={"text": "a good film"})
            return many, streamed, after

    many, streamed, after = asyncio.run(ask())
    for r in many:
        assert not isinstance(r, Exception), repr(r)
        assert r.status_code == 413 and "3,000,012 bytes" in r.json()["detail"]
    assert streamed.status_code == 413 and "200,000 bytes" in streamed.json()["detail"]
    assert after.json()["label"] == "pos"


def test_inference_runs_on_one_thread_whatever_the_concurrency(model_dir, monkeypatch):
    # one thread: the forward is not promised re-entrant, and its allocations stay in one malloc
    # arena (threads taking turns under a lock spread them over many: the server's memory crept up)
    import threading

    clf = TextClassifier.load(model_dir)
    threads, original = set(), clf.predict_proba

    def recording(texts, *args, **kwargs):
        threads.add(threading.get_ident())
        return original(texts, *args, **kwargs)

    monkeypatch.setattr(clf, "predict_proba", recording)
    with TestClient(create_app(clf)) as c, ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(lambda i: c.post("/predict", json={"text": f"a good film {i}"}), range(48)))
    assert all(r.status_code == 200 for r in answers) and len(threads) == 1


# ----------------------------------------------------------------------------- dynamic batching (issue 13)
def _ask_concurrently(app, requests: list[tuple[str, dict | bytes]]) -> list:
    """All ``requests`` (path, JSON body or raw bytes) in flight at once through the ASGI app."""
    import asyncio

    import httpx

    async def go():
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)  # a 500 is an answer here
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:

            def post(path, body):
                if isinstance(body, bytes):
                    return c.post(path, content=body, headers={"content-type": "application/json"})
                return c.post(path, json=body)

            return await asyncio.gather(*(post(path, body) for path, body in requests))

    return asyncio.run(go())


def _recording(monkeypatch, clf, fail_on: str | None = None) -> list[int]:
    """Wrap ``clf.predict_proba``: record each call's number of texts; raise if a text holds ``fail_on``."""
    sizes, original = [], clf.predict_proba

    def recording(texts, *args, **kwargs):
        sizes.append(len(texts))
        if fail_on is not None and any(fail_on in t for t in texts):
            raise RuntimeError("this text breaks the model")
        return original(texts, *args, **kwargs)

    monkeypatch.setattr(clf, "predict_proba", recording)
    return sizes


WORDS = ["good", "bad", "great", "awful", "fun", "dull"]


@pytest.mark.parametrize("runtime", ["torch", "onnx"])
def test_concurrent_predictions_are_merged_and_each_gets_exactly_its_own_answer(model_dir, runtime, tmp_path, monkeypatch):
    from textrnn.serving import load_model

    if runtime == "onnx":
        pytest.importorskip("onnxruntime")
        pytest.importorskip("onnx")
        from textrnn.export import export_onnx

        export_onnx(model_dir, tmp_path / "m.onnx", check=False)
    clf = load_model(model_dir, runtime, tmp_path / "m.onnx" if runtime == "onnx" else None)
    singles = [f"{WORDS[i % 6]} film, part {i} of a very {'long ' * (i % 7)}series" for i in range(14)]
    batches = [[f"{WORDS[(i + j) % 6]} acting {j}" for j in range(1 + i % 4)] for i in range(6)]  # 1 to 4 texts
    own = {t: row for t, row in zip(singles, clf.predict_proba(singles))}  # the model's own answers, first
    own_batches = [clf.predict_proba(b) for b in batches]
    sizes = _recording(monkeypatch, clf)
    app = create_app(clf, batch_wait=0.1, batch_gap=0.1, **LIMITS)  # long waits: the 20 requests surely meet
    requests = [("/predict", {"text": t}) for t in singles] + [("/predict", {"texts": b}) for b in batches]
    answers = _ask_concurrently(app, requests)
    app.state.batcher.close()
    assert all(r.status_code == 200 for r in answers), [r.text for r in answers]
    assert max(sizes) > 4 and len(sizes) < len(requests)  # merged: fewer forwards than requests
    for t, r in zip(singles, answers):
        body = r.json()
        assert body["probabilities"] == pytest.approx(dict(zip(["neg", "pos"], map(float, own[t]))), abs=1e-5)
        assert body["label"] == ["neg", "pos"][int(np.argmax(own[t]))]
    for b, want, r in zip(batches, own_batches, answers[len(singles) :]):
        body = r.json()
        assert len(body["probabilities"]) == len(b)
        for got, row in zip(body["probabilities"], want):
            assert [got["neg"], got["pos"]] == pytest.approx(row.tolist(), abs=1e-5)
    stats = app.state.batcher.stats
    assert stats["requests"] == 20 and stats["texts"] == len(singles) + sum(map(len, batches))


def test_a_bad_request_among_concurrent_ones_fails_alone(model_dir, monkeypatch):
    clf = TextClassifier.load(model_dir)
    texts = [f"{WORDS[i % 6]} film {i}" for i in range(12)]
    own = clf.predict_proba(texts + ["a good film", "a bad film"])
    sizes = _recording(monkeypatch, clf, fail_on="POISON")
    app = create_app(clf, batch_wait=0.1, batch_gap=0.1, **LIMITS)
    bad = [
        ("/predict", b'{"text": '),
        ("/predict", {"text": "x" * 201}),
        ("/predict", {}),
        ("/predict", {"texts": ["a"] * 5}),
        ("/predict", {"text": "a POISON text"}),  # the model fails on it
        ("/predict", {"texts": ["a good film", "a POISON text", "a bad film"]}),
    ]
    requests = [("/predict", {"text": t}) for t in texts[:6]] + bad + [("/predict", {"text": t}) for t in texts[6:]]
    answers = _ask_concurrently(app, requests)
    app.state.batcher.close()
    assert [r.status_code for r in answers[6:12]] == [400, 413, 422, 413, 500, 500]
    assert all("detail" in r.json() and "POISON" not in r.text for r in answers[6:12])
    good = answers[:6] + answers[12:]
    assert all(r.status_code == 200 for r in good), [r.text for r in good]
    for t, row, r in zip(texts, own, good):
        assert r.json()["probabilities"]["pos"] == pytest.approx(float(row[1]), abs=1e-5), t
    assert max(sizes) > 3 and app.state.batcher.stats["retried_alone"] >= 1  # merged, failed, then one by one


@pytest.mark.parametrize("forward_s,explain_s", [(0.03, 0.01), (0.01, 0.03)])
def test_explain_and_predictions_share_the_thread_under_a_flood(model_dir, forward_s, explain_s):
    import asyncio
    import threading
    import time

    from textrnn.serving import Batcher

    clf = TextClassifier.load(model_dir)
    order, lock = [], threading.Lock()

    def slow_predict(texts):
        time.sleep(forward_s)
        with lock:
            order.append("p")
        return clf.predict_proba(texts)

    def slow_explain(text):
        time.sleep(explain_s)
        with lock:
            order.append("e")
        return text

    batcher = Batcher(slow_predict, max_texts=8, wait=0, gap=0)

    async def flood():
        stop = asyncio.Event()

        async def predicting(i):  # each client asks again as soon as it is answered
            while not stop.is_set():
                await batcher.predict([f"good film {i}"] * 4)

        clients = [asyncio.create_task(predicting(i)) for i in range(12)]
        await asyncio.sleep(0.05)
        explained = await asyncio.wait_for(asyncio.gather(*(batcher.call(slow_explain, f"text {k}") for k in range(6))), 10)
        stop.set()
        await asyncio.gather(*clients)
        return explained

    assert asyncio.run(flood()) == [f"text {k}" for k in range(6)]  # /explain was not starved
    batcher.close()
    seq = "".join(order)
    during = seq[seq.index("e") : seq.rindex("e") + 1]
    assert "p" in during, seq  # nor were the predictions: they ran between the explanations
    # each lane had about half the thread: runs of one lane last about one job of the other, plus one
    longest_e = max(len(run) for run in during.split("p"))
    longest_p = max(len(run) for run in during.split("e"))
    assert longest_e <= round(forward_s / explain_s) + 1 and longest_p <= round(explain_s / forward_s) + 1, seq


def test_the_merged_batch_is_capped_and_a_big_request_runs_alone(model_dir):
    import asyncio
    import threading

    from textrnn.serving import Batcher

    clf = TextClassifier.load(model_dir)
    sizes, started, release = [], threading.Event(), threading.Event()

    def predict(texts):
        sizes.append(len(texts))
        if len(sizes) == 1:  # hold the first forward so the others queue behind it
            started.set()
            release.wait(10)
        return clf.predict_proba(texts)

    batcher = Batcher(predict, max_texts=10, wait=0, gap=0)

    async def go():
        first = asyncio.ensure_future(batcher.predict(["good"]))
        await asyncio.get_running_loop().run_in_executor(None, started.wait, 10)
        rest = [asyncio.ensure_future(batcher.predict([f"bad {i}"] * n)) for i, n in enumerate([4, 4, 4, 12, 2])]
        await asyncio.sleep(0.05)
        release.set()
        return await asyncio.gather(first, *rest)

    answers = asyncio.run(go())
    batcher.close()
    assert [len(a) for a in answers] == [1, 4, 4, 4, 12, 2]
    assert sizes == [1, 8, 4, 12, 2]  # 4+4, then 4 (4 more would pass 10), then 12 alone, then 2
    assert all(s <= 10 for s in sizes if s != 12)


def test_batching_settings_are_checked_and_reported(model_dir):
    from textrnn.errors import TextRNNError

    for bad in (
        dict(batch_texts=0),
        dict(batch_texts=1.5),
        dict(batch_wait=-1),
        dict(batch_wait=5),
        dict(batch_wait="1"),
        dict(batch_gap=-0.1),
        dict(batch_gap=True),
    ):
        with pytest.raises(TextRNNError, match="batch_"):
            create_app(model_dir, **bad)
    with TestClient(create_app(model_dir, batch_texts=64, batch_wait=0.001)) as c:
        c.post("/predict", json={"texts": ["a good film", "a bad film"]})
        batching = c.get("/model").json()["batching"]
    assert batching["batch_texts"] == 64 and batching["batch_wait_s"] == 0.001
    assert batching["batch_gap_s"] == 0.001  # never longer than the wait
    assert batching["forwards"] == 1 and batching["texts"] == 2


def test_serve_bounds_the_kernel_caches_unless_the_environment_does(model_dir, monkeypatch):
    # oneDNN and ideep keep a kernel per matrix shape, 1,024 each: a server's batches of every size
    # filled them, and the server's memory grew by hundreds of MB under load (issue 13)
    import os

    import torch
    import uvicorn

    from textrnn.serving import KERNEL_CACHE_SHAPES, bound_kernel_caches, serve

    seen = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.append(app))
    serve(model_dir)
    assert torch.get_num_threads() == 1  # the server process's intra-op threads (put back by the fixture)
    assert TestClient(seen[0]).get("/model").json()["batching"]["inference_threads"] == 1
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == os.environ["LRU_CACHE_CAPACITY"] == str(KERNEL_CACHE_SHAPES)
    monkeypatch.setenv("LRU_CACHE_CAPACITY", "7")
    assert bound_kernel_caches()["LRU_CACHE_CAPACITY"] == "7"  # the user's own setting wins


@pytest.mark.parametrize("runtime", ["torch", "onnx"])
def test_the_inference_thread_runs_with_the_threads_it_is_given(model_dir, runtime, tmp_path):
    import asyncio

    import torch

    if runtime == "onnx":
        pytest.importorskip("onnxruntime")
        pytest.importorskip("onnx")
        from textrnn.export import export_onnx

        export_onnx(model_dir, tmp_path / "m.onnx", check=False)
    app = create_app(model_dir, runtime=runtime, onnx_path=tmp_path / "m.onnx" if runtime == "onnx" else None, inference_threads=1)
    with TestClient(app) as c:
        assert c.post("/predict", json={"text": "a good film"}).json()["label"] == "pos"
        assert c.get("/model").json()["batching"]["inference_threads"] == 1
    if runtime == "torch":
        assert asyncio.run(app.state.batcher.call(torch.get_num_threads)) == 1
    else:
        assert app.state.classifier.session_.get_session_options().intra_op_num_threads == 1
    with pytest.raises(Exception, match="inference_threads must be a positive integer"):
        create_app(model_dir, inference_threads=0)
