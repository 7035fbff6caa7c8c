"""/docs and /redoc offline (issue 17): their JS and CSS come from the app, which serves them from
the installed fastapi-offline package, never from a CDN. Checked with FastAPI's test client (the
pages name only local files, and those files answer), and in Debian's chromium with every request
to another host aborted (the pages still render the endpoints). Without the package the app
starts and both pages say in one line how to install it."""

import os
import re
import shutil
import socket
import sys
import threading
import time
import warnings

import pytest

pytest.importorskip("fastapi", reason="serving needs FastAPI: pip install 'textrnn[serve]'")
pytest.importorskip("httpx", reason="FastAPI's test client needs httpx")

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # newer Starlette asks for httpx2 instead of httpx
    from fastapi.testclient import TestClient

from conftest import tiny_sentiment
from textrnn import TextClassifier
from textrnn.serving import DOCS_ASSETS, DOCS_MISSING, create_app, docs_assets

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TINY = dict(embedding_dim=8, hidden_size=8, epochs=2, batch_size=8, min_freq=1, early_stopping_patience=None)
ENDPOINTS = ("/predict", "/explain", "/health", "/model")
# every URL a page names: src= and href= attributes, and quoted strings in its inline script
URL = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']|url:\s*["']([^"']+)["']|spec-url\s*=\s*["']([^"']+)["']""")
needs_assets = pytest.mark.skipif(docs_assets() is None, reason="the docs' files are not installed: pip install fastapi-offline")


@pytest.fixture(scope="module")
def clf():
    texts, labels = tiny_sentiment()
    return TextClassifier(**TINY).fit(texts, labels, progress=False)


@pytest.fixture(scope="module")
def client(clf):
    with TestClient(create_app(clf, name="sentiment")) as c:
        yield c


def _local_urls(html: str) -> list[str]:
    assert not re.search(r"(?:https?:)?//[\w.-]+", html), "the page names another host"
    urls = [next(u for u in m.groups() if u) for m in URL.finditer(html)]
    assert urls and all(u.startswith("/") and not u.startswith("//") for u in urls), urls
    return urls


@needs_assets
def test_docs_name_only_local_files_and_those_files_answer(client):
    r = client.get("/docs")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    urls = _local_urls(r.text)
    assert {f"{DOCS_ASSETS}/swagger-ui-bundle.js", f"{DOCS_ASSETS}/swagger-ui.css", "/openapi.json"} <= set(urls)
    js = client.get(f"{DOCS_ASSETS}/swagger-ui-bundle.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"] and "SwaggerUIBundle" in js.text
    css = client.get(f"{DOCS_ASSETS}/swagger-ui.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css") and ".swagger-ui" in css.text
    for url in urls:
        assert client.get(url).status_code == 200, url
    assert "oauth2-redirect" in r.text
    redirect = client.get("/docs/oauth2-redirect")
    assert redirect.status_code == 200 and "swaggerUIRedirectOauth2" in redirect.text
    assert set(client.get("/openapi.json").json()["paths"]) >= set(ENDPOINTS)
    assert not any(p.startswith(("/docs", "/redoc")) for p in client.get("/openapi.json").json()["paths"])


@needs_assets
def test_redoc_names_only_local_files(client):
    r = client.get("/redoc")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    urls = _local_urls(r.text)
    assert f"{DOCS_ASSETS}/redoc.standalone.js" in urls
    for url in urls:
        assert client.get(url).status_code == 200, url
    assert "Redoc" in client.get(f"{DOCS_ASSETS}/redoc.standalone.js").text


def test_without_the_package_the_server_starts_and_docs_say_how_to_install_it(clf, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "fastapi_offline", None)  # import fastapi_offline fails, as when not installed
    assert docs_assets() is None
    with TestClient(create_app(clf, name="sentiment")) as c:
        assert c.get("/health").status_code == 200
        assert c.post("/predict", json={"text": "great fun"}).status_code == 200
        for page in ("/docs", "/redoc"):
            r = c.get(page)
            assert r.status_code == 503 and r.text == DOCS_MISSING, r.text
            assert "\n" not in r.text and "pip install fastapi-offline" in r.text and "Traceback" not in r.text
        assert c.get(f"{DOCS_ASSETS}/swagger-ui.css").status_code == 404
    assert DOCS_MISSING in caplog.text


# in a real browser, offline


@pytest.fixture(scope="module")
def server(clf):
    uvicorn = pytest.importorskip("uvicorn", reason="serving needs uvicorn: pip install 'textrnn[serve]'")
    app = create_app(clf, name="sentiment")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))  # a free port, held from here on
    srv = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("uvicorn did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    srv.should_exit = True
    thread.join(10)
    sock.close()


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed (pip install playwright)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True, timeout=60_000)
        yield b
        b.close()


def _offline_page(browser, server):
    """A page on which every request to a host other than the server is aborted, and recorded."""
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    aborted: list[str] = []

    def only_local(route):
        if route.request.url.startswith(server + "/"):
            route.continue_()
        else:
            aborted.append(route.request.url)
            route.abort()

    page.route("**/*", only_local)
    return page, aborted


@needs_assets
def test_swagger_ui_renders_the_endpoints_offline(server, browser, tmp_path):
    page, aborted = _offline_page(browser, server)
    page.goto(server + "/docs")
    page.wait_for_selector(".opblock-summary-path[data-path='/predict']", timeout=30_000)
    paths = page.eval_on_selector_all(".opblock-summary-path", "els => els.map(e => e.dataset.path)")
    assert set(paths) >= set(ENDPOINTS), paths
    assert "textrnn" in page.text_content(".information-container .title")
    assert page.locator(".errors-wrapper").count() == 0  # "Unable to render this definition" and the like
    page.click(".opblock-summary-path[data-path='/predict']")  # the operation opens, with its request body
    page.wait_for_selector(".opblock.is-open .opblock-body", timeout=10_000)
    page.screenshot(path=str(tmp_path / "docs.png"), full_page=True)
    assert aborted == [], aborted  # the page asked no other host for anything
    page.close()


@needs_assets
def test_redoc_renders_the_endpoints_offline(server, browser, tmp_path):
    page, aborted = _offline_page(browser, server)
    page.goto(server + "/redoc")
    page.wait_for_selector("h2:has-text('Labels and probabilities for one text or a batch')", timeout=30_000)
    text = page.text_content("body")
    assert all(path in text for path in ENDPOINTS)
    page.screenshot(path=str(tmp_path / "redoc.png"), full_page=False)
    # ReDoc 2's footer asks for the Redocly logo from its CDN; the page's Content-Security-Policy
    # keeps images to this server, so not even that request leaves the machine
    assert aborted == [], aborted
    page.close()
