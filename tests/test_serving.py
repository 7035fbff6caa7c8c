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

from textrnn import TextClassifier
from textrnn.cli import main
from textrnn.serving import STATIC, create_app

from conftest import tiny_sentiment

FAST = dict(embedding_dim=16, hidden_size=16, epochs=20, batch_size=8, learning_rate=0.02, schedule="constant",
            min_freq=1, dropout=0.0, embedding_dropout=0.0, early_stopping_patience=None)
LIMITS = dict(max_text_chars=200, max_batch=4, max_body_bytes=4000)


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
    ("body too big, streamed", dict(content=iter([b'{"text": "', b"a" * 4100, b'"}']),
                                    headers={"content-type": "application/json"}), 413, ["body", "4,000 bytes"]),
]


@pytest.mark.parametrize("what,request_kwargs,status,words", BAD, ids=[b[0] for b in BAD])
def test_bad_predict_requests_get_a_clear_4xx(client, what, request_kwargs, status, words):
    r = client.post("/predict", **request_kwargs)
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, str)  # one message, not pydantic's list
    for w in words:
        assert w in detail, (w, detail)


@pytest.mark.parametrize("body,status,words", [
    ({}, 422, ["Missing field 'text'"]),
    ({"texts": ["a"]}, 422, ["Unknown field 'texts'"]),
    ({"text": ["a"]}, 422, ["must be a string"]),
    ({"text": "a" * 201}, 413, ["200"]),
])
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
