"""The page in a real browser: Debian's chromium driven by Playwright, the app served by uvicorn on
127.0.0.1. Offline: chromium is launched with its network-reaching features off, and the test
fails if the page asks for anything but the app's own address."""

import os
import shutil
import socket
import threading
import time

import pytest

from conftest import tiny_sentiment
from textrnn import TextClassifier

sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed (pip install playwright)")
uvicorn = pytest.importorskip("uvicorn", reason="serving needs uvicorn: pip install 'textrnn[serve]'")
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
if CHROMIUM is None:
    pytest.skip("Debian's chromium is not installed (apt-get install chromium)", allow_module_level=True)

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
)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from textrnn.serving import create_app

    texts, labels = tiny_sentiment()
    model_dir = tmp_path_factory.mktemp("browser") / "sentiment" / "model"
    TextClassifier(**FAST).fit(texts, labels, progress=False).save(model_dir)
    app = create_app(model_dir, max_text_chars=300)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))  # a free port, held from here on: no race with another process
    port = sock.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("uvicorn did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(10)
    sock.close()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True, timeout=60_000)
        yield b
        b.close()


def test_type_a_review_and_see_the_label_and_highlights(server, browser, tmp_path):
    page = browser.new_page(viewport={"width": 1000, "height": 860})
    asked = []
    page.on("request", lambda r: asked.append(r.url))
    page.goto(server + "/")
    # a selector, not wait_for_function: the page's Content-Security-Policy forbids eval, and it should
    page.wait_for_selector("#model-name:has-text('sentiment')")
    page.fill("#text", "Truly great acting, and I loved it. The music was good fun!")
    page.click("#classify")
    page.wait_for_selector("#result:not([hidden])", timeout=15_000)

    assert page.text_content("#label") == "pos"
    assert page.text_content("#probability").endswith("%")
    width = page.eval_on_selector("#bar-fill", "e => parseFloat(e.style.width)")
    assert 50 <= width <= 100
    tokens = page.locator("#tokens .tok")
    assert tokens.count() == 15
    supporting = page.locator("#tokens .tok.plus")
    assert supporting.count() >= 1
    words = supporting.all_text_contents()
    assert {"great", "good", "loved"} & set(words)
    background = page.eval_on_selector("#tokens .tok.plus", "e => getComputedStyle(e).backgroundColor")
    assert background.startswith("rgba(22, 163, 74")
    shot = tmp_path / "page.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes().startswith(b"\x89PNG")
    assert asked and all(url.startswith(server) for url in asked), asked  # nothing from outside

    # a limit: the page shows the server's message instead of a result
    page.fill("#text", "word " * 100)
    page.click("#classify")
    page.wait_for_selector("#error:not([hidden])", timeout=15_000)
    assert "limit is 300" in page.text_content("#error")
    page.close()
