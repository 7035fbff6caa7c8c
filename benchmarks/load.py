"""Load benchmark for issue 6: ``textrnn serve`` in a real subprocess, a bounded mix of requests
over loopback, every answer checked.

    python benchmarks/load.py [--model DIR] [--requests 5000] [--concurrency 32] [--time-limit 600]
                              [--baseline-src OTHER_CHECKOUT/src]

Without ``--model`` a small LSTM is trained in a temporary folder on generated text (seconds;
never IMDB). The server runs as a user would run it (``python -m textrnn serve MODEL --host
127.0.0.1 --port P``, uvicorn, a free port); the client is asyncio + httpx in this process, with
``--concurrency`` requests in flight at once over kept-alive connections. A warm-up phase
(``--warmup``, same mix) comes first and is checked but not timed.

The mix: single predictions, batches of 8 to 32 texts, /explain, and malformed requests (invalid
JSON, a missing field, a text over the server's limit, a batch over its limit, a body over its
limit, sent whole before the answer is read), whose limits are read from GET /model. Every
well-formed answer is compared with the model's own answer computed in this process beforehand
(``textrnn.load(model).predict_proba``, and ``explain`` for /explain), within 1e-5; every
malformed one must get its own 4xx with a one-sentence JSON ``detail``. The client shares the
machine's cores with the server: the requests per second are the pair's, not the server's alone.

Memory: the server's VmRSS (/proc/PID/status) before the warm-up, after it, every 0.5 s during
the timed run, and after it. "Flat" means the last sample is within ``--rss-tolerance`` (15%) of
the one taken after the warm-up: the warm-up is where the allocator's heaps grow to the largest
requests (batches, /explain) and fragment; that settling-in slows down and stops, while a leak
grows in proportion to requests, so the growth in each half of the timed run is reported too.
(oneDNN's kernel caches, one kernel per matrix shape, grew like a leak until ``textrnn serve``
bounded them: ``serving.KERNEL_CACHE_SHAPES``.)

Writes benchmarks/results/load-<date>.json (machine, versions, config, every figure and check)
and prints a summary. Exit status 1 when a check fails. With ``--baseline-src`` the same run is made
twice, back to back on one model: first with the server's code taken from that folder (the ``src``
of another checkout, e.g. ``git worktree add /tmp/base HEAD``), then with this checkout's, and the
file holds both ("before", "after") and their ratios. ``tests/test_load.py`` runs the same code
with a few hundred requests.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TOLERANCE = 1e-5
# In bfloat16 (runtime.precision "auto" on a CPU with native bfloat16) a text's probabilities depend
# on whether it was computed alone or inside a micro-batch of 16 or more (textrnn.fastrnn), to
# bfloat16's rounding (about 3 significant digits).
TOLERANCE_BF16 = 5e-3
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")

# the share of each request kind in the mix; malformed ones make up 11%
MIX = {
    "single": 0.57,
    "batch": 0.22,
    "explain": 0.10,
    "bad_json": 0.025,
    "missing_field": 0.025,
    "text_too_long": 0.025,
    "batch_too_big": 0.025,
    "body_too_big": 0.01,
}
WELL_FORMED = ("single", "batch", "explain")
EXPECTED_STATUS = {
    "single": 200,
    "batch": 200,
    "explain": 200,
    "bad_json": 400,
    "missing_field": 422,
    "text_too_long": 413,
    "batch_too_big": 413,
    "body_too_big": 413,
}

# ----------------------------------------------------------------------------- data and model
POSITIVE = ["good", "great", "wonderful", "superb", "loved", "brilliant", "fun", "moving", "charming", "best"]
NEGATIVE = ["bad", "awful", "boring", "terrible", "hated", "dull", "weak", "mess", "worst", "poor"]


def _filler_words(n: int = 300, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    consonants, vowels = "bcdfghklmnprstvz", "aeiou"
    words = set()
    while len(words) < n:
        words.add("".join(rng.choice(consonants) + rng.choice(vowels) for _ in range(rng.randint(1, 3))))
    return sorted(words)


def make_corpus(n: int, seed: int = 0, min_words: int = 4, max_words: int = 60) -> tuple[list[str], list[str]]:
    """Generated reviews: filler words with a few sentiment words; the label is the majority."""
    rng, fillers = random.Random(seed), _filler_words()
    texts, labels = [], []
    for i in range(n):
        label = "pos" if i % 2 == 0 else "neg"
        own, other = (POSITIVE, NEGATIVE) if label == "pos" else (NEGATIVE, POSITIVE)
        words = [rng.choice(fillers) for _ in range(rng.randint(min_words, max_words))]
        k = rng.randint(1, 3)
        for w in [rng.choice(own) for _ in range(k + 1)] + [rng.choice(other) for _ in range(rng.randint(0, k - 1))]:
            words.insert(rng.randrange(len(words) + 1), w)
        text = " ".join(words)
        texts.append(text.capitalize() + rng.choice([".", "!", "...", ""]))
        labels.append(label)
    return texts, labels


def train_model(out_dir: str | os.PathLike, seed: int = 0, n_texts: int = 600, epochs: int = 3) -> Path:
    """A small bidirectional LSTM on generated texts: a real model, trained in seconds."""
    from textrnn import TextClassifier

    texts, labels = make_corpus(n_texts, seed)
    clf = TextClassifier(
        embedding_dim=32,
        hidden_size=32,
        epochs=epochs,
        batch_size=32,
        min_freq=1,
        max_length=120,
        learning_rate=0.01,
        early_stopping_patience=None,
        seed=seed,
        num_threads=1,
    )  # two threads on two shared cores train many times slower when busy
    clf.fit(texts, labels, progress=False)
    path = Path(out_dir) / "load" / "model"
    clf.save(path)
    return path


def request_texts(n: int, seed: int = 1) -> list[str]:
    """Texts to send: generated ones of many lengths (some past max_length, so truncation runs),
    plus the awkward ones: empty, blank, unknown words only, HTML, emoji, other scripts, and a
    lone surrogate (a character cut in half: valid as a JSON escape, not as UTF-8)."""
    texts, _ = make_corpus(n - 14, seed, min_words=0, max_words=200)
    return [
        "",
        "   ",
        "\t\n",
        "zzzq xxyyq qqqq",
        "A <b>great</b> film<br />with a bad end.",
        "good 😀👍 bad 😡",
        "Ｆｕｌｌ－ｗｉｄｔｈ ｇｏｏｄ",
        "очень хороший фильм",
        "素晴らしい映画",
        "!!!???",
        "good " * 400,
        "awful, awful, awful",
        "good film\ud83d",
        "bad \udfff film",
    ] + texts  # \ud83d: half an emoji


def text_pool(pool_size: int, seed: int) -> tuple[list[str], list[int]]:
    """The texts requests draw from, and the indexes of those short enough for /explain."""
    pool = request_texts(pool_size, seed + 1)
    return pool, [i for i, t in enumerate(pool) if len(t) < 400][:200]


# ----------------------------------------------------------------------------- the plan
@dataclass
class Request:
    kind: str
    path: str
    body: bytes
    texts: list[int] = field(default_factory=list)  # indexes into the text pool, for the check


def build_plan(n: int, pool_size: int, explainable: list[int], limits: dict, seed: int) -> list[Request]:
    """``n`` requests in a shuffled order, each kind's count in proportion to MIX (at least one each)."""
    rng = random.Random(seed)
    kinds = list(MIX)
    counts = {k: max(1, round(n * MIX[k])) for k in kinds}
    counts["single"] += n - sum(counts.values())
    order = [k for k in kinds for _ in range(counts[k])]
    rng.shuffle(order)
    max_batch, max_chars = limits["max_batch"], limits["max_text_chars"]
    # one body (shared: it is big) 1.5 times the body limit, sent whole before the answer is read
    too_big = json.dumps({"text": "a" * (limits["max_body_bytes"] * 3 // 2)}).encode()
    plan = []
    for kind in order:
        if kind == "single":
            i = rng.randrange(pool_size)
            plan.append(Request(kind, "/predict", b"", [i]))
        elif kind == "batch":
            idx = [rng.randrange(pool_size) for _ in range(min(rng.randint(8, 32), max_batch))]
            plan.append(Request(kind, "/predict", b"", idx))
        elif kind == "explain":
            plan.append(Request(kind, "/explain", b"", [rng.choice(explainable)]))
        elif kind == "bad_json":
            plan.append(
                Request(
                    kind,
                    "/predict",
                    rng.choice([b'{"text": ', b"{'text': 'single quotes'}", b'{"text": "a",}', b"not json at all", b'{"texts": ["a", "b"']),
                )
            )
        elif kind == "missing_field":
            plan.append(Request(kind, rng.choice(["/predict", "/explain"]), b"{}"))
        elif kind == "text_too_long":
            plan.append(
                Request(
                    kind,
                    rng.choice(["/predict", "/explain"]),
                    json.dumps({"text": "word " * (max_chars // 5) + "x" * (max_chars % 5 + 1)}).encode(),
                )
            )
        elif kind == "batch_too_big":
            plan.append(Request(kind, "/predict", json.dumps({"texts": ["a short text"] * (max_batch + 1)}).encode()))
        elif kind == "body_too_big":
            plan.append(Request(kind, rng.choice(["/predict", "/explain"]), too_big))
    return plan


def encode_bodies(plan: list[Request], pool: list[str]) -> None:
    for r in plan:
        if r.kind == "batch":
            r.body = json.dumps({"texts": [pool[i] for i in r.texts]}).encode()
        elif r.kind in ("single", "explain"):
            r.body = json.dumps({"text": pool[r.texts[0]]}).encode()


# ----------------------------------------------------------------------------- checking answers
class Expected:
    """The model's own answers, computed in this process before any request is sent."""

    def __init__(self, model_dir: Path, pool: list[str], explainable: list[int]):
        import numpy as np
        import torch

        import textrnn
        from textrnn.explain import explain
        from textrnn.runtime import compute_dtype, device_of

        clf = textrnn.load(model_dir)
        bf16 = compute_dtype(device_of(clf.model_), clf.config.runtime.precision) == torch.bfloat16
        self.tolerance = TOLERANCE_BF16 if bf16 else TOLERANCE
        self.precision = "bfloat16" if bf16 else "float32"
        self.labels = [str(c) for c in clf.classes_]
        self.proba = np.asarray(clf.predict_proba(pool), dtype=np.float64)  # (N, K)
        self.explained = {i: explain(clf, pool[i]) for i in explainable}

    def _check_row(self, i: int, label: str, probabilities: dict) -> str | None:
        row = self.proba[i]
        if set(probabilities) != set(self.labels):
            return f"probabilities have labels {sorted(probabilities)}, expected {self.labels}"
        worst = max(abs(probabilities[c] - row[k]) for k, c in enumerate(self.labels))
        if worst > self.tolerance:
            return f"text {i}: a probability differs by {worst:.2e}"
        top = sorted(row)[-2:]
        if label != self.labels[int(row.argmax())] and top[1] - top[0] > self.tolerance:  # a near-tie may go either way
            return f"text {i}: label {label!r}, expected {self.labels[int(row.argmax())]!r}"
        return None

    def check(self, r: Request, status: int, payload) -> str | None:
        want = EXPECTED_STATUS[r.kind]
        if status != want:
            return f"status {status}, expected {want}"
        if not isinstance(payload, dict):
            return "the answer is not a JSON object"
        if r.kind not in WELL_FORMED:
            detail = payload.get("detail")
            if not isinstance(detail, str) or not detail or "Traceback" in detail:
                return f"the 4xx detail is not one message: {detail!r:.200}"
            return None
        try:
            if r.kind == "single":
                if payload["probability"] != payload["probabilities"][payload["label"]]:
                    return "'probability' is not the label's probability"
                return self._check_row(r.texts[0], payload["label"], payload["probabilities"])
            if r.kind == "batch":
                if len(payload["labels"]) != len(r.texts) or len(payload["probabilities"]) != len(r.texts):
                    return f"{len(payload['labels'])} answers for {len(r.texts)} texts"
                for i, label, probs in zip(r.texts, payload["labels"], payload["probabilities"]):
                    if (err := self._check_row(i, label, probs)) is not None:
                        return err
                return None
            # explain: the prediction as /predict would give it, the tokens and scores as explain() gives them
            i, want = r.texts[0], self.explained[r.texts[0]]
            if (err := self._check_row(i, payload["label"], payload["probabilities"])) is not None:
                return err
            # the server writes a lone surrogate (half a character) back as U+FFFD: JSON in UTF-8 cannot hold it
            tokens = [_LONE_SURROGATE.sub("\ufffd", t) for t in want["tokens"]]
            if payload["tokens"] != tokens or payload["seen"] != want["seen"] or payload["unknown"] != want["unknown"]:
                return f"text {i}: tokens differ from explain()"
            if len(payload["scores"]) != len(want["scores"]) or any(
                abs(a - b) > self.tolerance for a, b in zip(payload["scores"], want["scores"])
            ):
                return f"text {i}: scores differ from explain() by more than {self.tolerance}"
            return None
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            return f"malformed answer ({type(e).__name__}: {e})"


# ----------------------------------------------------------------------------- the server
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kb(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def cpu_seconds(pid: int | None = None) -> float | None:
    """CPU time (user + system) of process ``pid`` and all its threads; of the whole machine (all
    cores, every process) for None."""
    tick = os.sysconf("SC_CLK_TCK")
    try:
        if pid is None:
            with open("/proc/stat") as f:
                fields = [int(x) for x in f.readline().split()[1:]]
            return (sum(fields[:3]) + sum(fields[5:8])) / tick  # user nice system, irq softirq steal
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / tick
    except (OSError, ValueError, IndexError):
        return None


def cpu_use(before: dict, after: dict, requests: int, seconds: float) -> dict:
    """Who used the cores during the timed run: the server, this client, and everything else on
    the machine (the cores are shared), in core-seconds, per request and as cores busy on average.
    "Other processes" is the machine's count (/proc/stat) less the two, floored at 0: approximate."""
    used = {k: after[k] - before[k] if after[k] is not None and before[k] is not None else None for k in before}
    if used["machine"] is not None and used["server"] is not None and used["client"] is not None:
        used["other_processes"] = max(0.0, used["machine"] - used["server"] - used["client"])
    out = {f"{k}_cpu_seconds": round(v, 2) for k, v in used.items() if v is not None}
    for k in ("server", "client"):
        if used.get(k) is not None and requests:
            out[f"{k}_cpu_ms_per_request"] = round(1000 * used[k] / requests, 2)
    for k, v in used.items():
        if v is not None and seconds:
            out[f"{k}_cores_busy"] = round(v / seconds, 2)
    return out


def listening_addresses(port: int) -> list[str]:
    """The local addresses with a socket listening on ``port`` (Linux: /proc/net/tcp and tcp6)."""
    import ipaddress

    found = []
    for table, size in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 16)):
        with contextlib.suppress(OSError):
            for line in open(table).read().splitlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                address, hex_port = local.split(":")
                if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                    raw = bytes.fromhex(address)  # the kernel writes each 32-bit word in host (little-endian) order
                    raw = b"".join(raw[i : i + 4][::-1] for i in range(0, size, 4))
                    found.append(str(ipaddress.ip_address(raw)))
    return found


class Server:
    """``textrnn serve`` as a subprocess on 127.0.0.1 and a free port; its output goes to a log file."""

    def __init__(
        self,
        model_dir: Path,
        log_path: Path,
        extra_args: tuple[str, ...] = (),
        start_timeout: float = 120,
        src: str | os.PathLike | None = None,
    ):
        self.model_dir, self.log_path, self.extra_args, self.start_timeout = model_dir, log_path, extra_args, start_timeout
        self.src = Path(src) if src else REPO / "src"  # the server's code: this checkout's, or another's
        self.proc: subprocess.Popen | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "Server":
        import httpx

        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(self.src), os.environ.get("PYTHONPATH")]))}
        for attempt in range(3):  # the port is free when chosen; another process may take it before uvicorn binds
            self.port = free_port()
            cmd = [
                sys.executable,
                "-m",
                "textrnn",
                "serve",
                str(self.model_dir),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                *self.extra_args,
            ]
            self.log = open(self.log_path, "ab")
            start = self.log.tell()
            self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
            t0 = time.monotonic()
            deadline = t0 + self.start_timeout
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    if httpx.get(f"{self.url}/health", timeout=2, trust_env=False).status_code == 200:
                        self.start_seconds = time.monotonic() - t0
                        return self
                except httpx.TransportError:
                    pass
                time.sleep(0.2)
            self._stop()
            if "address already in use" not in self.log_path.read_text(errors="replace")[start:].lower():
                break
        raise RuntimeError(f"textrnn serve did not answer /health; its log ({self.log_path}):\n{self.log_tail()}")

    def _stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # uvicorn shuts down gracefully on SIGTERM
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def __exit__(self, *exc) -> None:
        self._stop()

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])


# ----------------------------------------------------------------------------- the client
@dataclass
class Outcome:
    kind: str
    seconds: float
    status: int | None = None
    error: str | None = None  # transport error (dropped connection, timeout): the exception's name
    wrong: str | None = None  # an answer that failed its check
    texts: int = 0  # texts predicted (well-formed /predict and /explain)


async def _send(
    plan: list[Request], url: str, concurrency: int, deadline: float, expected: Expected, request_timeout: float
) -> tuple[list[Outcome], float]:
    import httpx

    outcomes: list[Outcome] = []
    next_index = 0
    headers = {"content-type": "application/json"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=request_timeout, trust_env=False) as client:

        async def worker():
            nonlocal next_index
            while next_index < len(plan) and time.monotonic() < deadline:
                r = plan[next_index]
                next_index += 1
                t0 = time.perf_counter()
                try:
                    response = await client.post(r.path, content=r.body, headers=headers)
                    seconds = time.perf_counter() - t0
                except httpx.TransportError as e:  # includes timeouts: nothing came back
                    outcomes.append(Outcome(r.kind, time.perf_counter() - t0, error=type(e).__name__))
                    continue
                try:
                    payload = response.json()
                except ValueError:
                    payload = None
                out = Outcome(r.kind, seconds, status=response.status_code, texts=len(r.texts))
                out.wrong = expected.check(r, response.status_code, payload)
                if out.wrong and response.status_code >= 500:
                    out.wrong += f"; body: {response.text[:200]!r}"
                outcomes.append(out)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return outcomes, time.perf_counter() - t0


async def _sample_rss(pid: int, samples: list, stop: asyncio.Event, every: float, t0: float) -> None:
    while not stop.is_set():
        samples.append({"t": round(time.monotonic() - t0, 2), "kb": rss_kb(pid)})
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), every)


async def _timed(plan, url, concurrency, deadline, expected, request_timeout, pid, every):
    samples, stop = [], asyncio.Event()
    sampler = asyncio.create_task(_sample_rss(pid, samples, stop, every, time.monotonic()))
    try:
        outcomes, seconds = await _send(plan, url, concurrency, deadline, expected, request_timeout)
    finally:
        stop.set()
        await sampler
    return outcomes, seconds, samples


def _ms(values: list[float]) -> dict:
    import numpy as np

    if not values:
        return {"count": 0}
    a = np.asarray(values) * 1000
    return {
        "count": len(values),
        "median_ms": round(float(np.median(a)), 3),
        "p90_ms": round(float(np.percentile(a, 90)), 3),
        "p99_ms": round(float(np.percentile(a, 99)), 3),
        "max_ms": round(float(a.max()), 3),
        "mean_ms": round(float(a.mean()), 3),
    }


def summarize(outcomes: list[Outcome], planned: int, seconds: float) -> dict:
    statuses: dict[str, int] = {}
    per_kind = {}
    for kind in MIX:
        mine = [o for o in outcomes if o.kind == kind]
        per_kind[kind] = {
            **_ms([o.seconds for o in mine if o.status is not None]),
            "expected_status": EXPECTED_STATUS[kind],
            "statuses": {str(s): sum(o.status == s for o in mine) for s in sorted({o.status for o in mine if o.status})},
            "wrong": sum(o.wrong is not None for o in mine),
            "transport_errors": sum(o.error is not None for o in mine),
        }
    for o in outcomes:
        if o.status is not None:
            statuses[str(o.status)] = statuses.get(str(o.status), 0) + 1
    answered = [o for o in outcomes if o.status is not None]
    well = [o for o in answered if o.kind in WELL_FORMED]
    errors = [o.error for o in outcomes if o.error]
    return {
        "planned": planned,
        "sent": len(outcomes),
        "answered": len(answered),
        "not_sent": planned - len(outcomes),
        "seconds": round(seconds, 3),
        "requests_per_second": round(len(answered) / seconds, 1) if seconds else None,
        "texts_predicted_per_second": round(sum(o.texts for o in answered if o.status == 200) / seconds, 1) if seconds else None,
        "status_counts": statuses,
        "server_errors_5xx": sum(o.status >= 500 for o in answered),
        "transport_errors": len(errors),
        "transport_error_types": sorted(set(errors)),
        "4xx_on_well_formed": sum(400 <= o.status < 500 for o in well),
        "4xx_on_malformed": sum(400 <= o.status < 500 for o in answered if o.kind not in WELL_FORMED),
        "malformed_sent": sum(o.kind not in WELL_FORMED for o in outcomes),
        "wrong_answers": sum(o.wrong is not None for o in outcomes),
        "wrong_examples": [f"{o.kind}: {o.wrong}" for o in outcomes if o.wrong][:10],
        "latency": {"all": _ms([o.seconds for o in answered]), **per_kind},
    }


def run(
    model_dir: str | os.PathLike,
    requests: int = 5000,
    concurrency: int = 32,
    warmup: int | None = None,
    time_limit: float = 600,
    seed: int = 0,
    pool_size: int = 1000,
    rss_tolerance: float = 0.15,
    rss_every: float = 0.5,
    request_timeout: float = 60,
    work_dir: str | os.PathLike | None = None,
    progress=print,
    src: str | os.PathLike | None = None,
    expected: Expected | None = None,
) -> dict:
    """Start the server on ``model_dir``, warm it up, send ``requests`` at ``concurrency`` and check
    everything. Returns the results (``checks`` says what passed; ``passed`` is all of them).
    ``src``: where the server's code comes from (default: this checkout's src); ``expected``: the
    model's answers when already computed (a second run on the same model and seed)."""
    import httpx

    model_dir = Path(model_dir)
    warmup = max(concurrency, requests // 10) if warmup is None else warmup
    t_setup = time.perf_counter()
    pool, explainable = text_pool(pool_size, seed)
    expected = expected or Expected(model_dir, pool, explainable)
    setup_seconds = time.perf_counter() - t_setup
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    with contextlib.ExitStack() as stack:
        work = Path(work_dir) if work_dir else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="textrnn-load-")))
        server = stack.enter_context(Server(model_dir, work / "server.log", src=src))
        t_started = time.perf_counter()
        info = httpx.get(f"{server.url}/model", timeout=10, trust_env=False).json()
        limits = info["limits"]
        timed_plan = build_plan(requests, len(pool), explainable, limits, seed)
        warm_plan = build_plan(warmup, len(pool), explainable, limits, seed + 1000) if warmup else []
        encode_bodies(timed_plan + warm_plan, pool)
        pid = server.proc.pid
        rss = {"before_kb": rss_kb(pid)}
        listening = listening_addresses(server.port)
        deadline = time.monotonic() + time_limit
        progress(f"server pid {pid} on {server.url}; warm-up: {warmup} requests, then {requests} at concurrency {concurrency}")
        warm_outcomes, warm_seconds = asyncio.run(_send(warm_plan, server.url, concurrency, deadline, expected, request_timeout))
        rss["after_warmup_kb"] = rss_kb(pid)
        cpu_before = {"server": cpu_seconds(pid), "client": time.process_time(), "machine": cpu_seconds()}
        outcomes, seconds, during = asyncio.run(
            _timed(timed_plan, server.url, concurrency, deadline, expected, request_timeout, pid, rss_every)
        )
        cpu_after = {"server": cpu_seconds(pid), "client": time.process_time(), "machine": cpu_seconds()}
        rss["after_kb"] = rss_kb(pid)
        time.sleep(1.0)
        rss["after_idle_1s_kb"] = rss_kb(pid)
        still_up = server.proc.poll() is None and httpx.get(f"{server.url}/health", timeout=10, trust_env=False).status_code == 200
        # how the server merged /predict requests (servers without batching do not say)
        batching = httpx.get(f"{server.url}/model", timeout=10, trust_env=False).json().get("batching") if still_up else None
        log = (work / "server.log").read_text(errors="replace")
    timed = summarize(outcomes, len(timed_plan), seconds)
    warm = summarize(warm_outcomes, len(warm_plan), warm_seconds)
    kbs = [s["kb"] for s in during if s["kb"]]
    rss.update(
        {
            "during_max_kb": max(kbs, default=None),
            "during_min_kb": min(kbs, default=None),
            "tolerance": rss_tolerance,
            "growth_after_warmup": round(rss["after_kb"] / rss["after_warmup_kb"] - 1, 4)
            if rss["after_kb"] and rss["after_warmup_kb"]
            else None,
            # a leak grows with requests, as much in the second half as in the first; the
            # allocator's settling-in slows down
            "growth_first_half": round(kbs[len(kbs) // 2] / kbs[0] - 1, 4) if kbs else None,
            "growth_second_half": round(rss["after_kb"] / kbs[len(kbs) // 2] - 1, 4) if kbs and rss["after_kb"] else None,
            "samples_during": during,
        }
    )
    checks = {
        "all_requests_sent_in_time": timed["not_sent"] == 0 and warm["not_sent"] == 0,
        "zero_5xx": timed["server_errors_5xx"] == 0 and warm["server_errors_5xx"] == 0,
        "zero_transport_errors": timed["transport_errors"] == 0 and warm["transport_errors"] == 0,
        "4xx_only_on_malformed": timed["4xx_on_well_formed"] == 0 and warm["4xx_on_well_formed"] == 0,
        "every_answer_correct": timed["wrong_answers"] == 0 and warm["wrong_answers"] == 0,
        "memory_flat": rss["growth_after_warmup"] is not None and rss["growth_after_warmup"] <= rss_tolerance,
        "server_still_healthy": still_up,
        "listens_on_loopback_only": bool(listening) and all(a in ("127.0.0.1", "::1") for a in listening),
        "no_traceback_in_server_log": "Traceback" not in log,
    }
    return {
        "benchmark": "load",
        "date": dt.date.today().isoformat(),
        "config": {
            "requests": requests,
            "concurrency": concurrency,
            "warmup_requests": warmup,
            "time_limit_s": time_limit,
            "request_timeout_s": request_timeout,
            "seed": seed,
            "text_pool": len(pool),
            "explainable_texts": len(explainable),
            "mix": MIX,
            "batch_texts": [8, 32],
            "tolerance": expected.tolerance,
            "precision": expected.precision,
            "rss_tolerance": rss_tolerance,
            "rss_sample_every_s": rss_every,
            "server": {
                "host": "127.0.0.1",
                "port": server.port,
                "src": str(server.src),
                "command": "python -m textrnn serve MODEL --host 127.0.0.1 --port PORT",
                "limits": limits,
                "runtime": info.get("runtime"),
                "listening_on": listening,
            },
            "model": {
                "dir": str(model_dir),
                "labels": info.get("labels"),
                "vocab_size": info.get("vocab_size"),
                "config": info.get("config"),
            },
            "client": "asyncio + httpx.AsyncClient, kept-alive connections, same machine, loopback only",
        },
        "setup_seconds": round(setup_seconds, 2),
        "server_start_to_ready_s": round(server.start_seconds, 2),
        "load_average_at_start": load_at_start,  # the machine's other work: the cores are shared
        "run_seconds": round(time.perf_counter() - t_started, 2),
        "timed": timed,
        "warmup": warm,
        "rss": rss,
        "checks": checks,
        "passed": all(checks.values()),
        # the client shares the cores: requests/s is the pair's, and other work on the machine slows both
        "cpu_during_timed_run": cpu_use(cpu_before, cpu_after, len(outcomes), seconds),
        "server_batching": _batching_summary(batching),
        "server_log_tail": "\n".join(log.splitlines()[-15:]) if not all(checks.values()) else None,
    }


def _batching_summary(batching: dict | None) -> dict | None:
    """The server's /model "batching" counters (since start-up, warm-up included) and their means."""
    if not batching:
        return None
    forwards = batching.get("forwards") or 0
    return {
        **batching,
        "texts_per_forward": round(batching["texts"] / forwards, 2) if forwards else None,
        "requests_per_forward": round(batching["requests"] / forwards, 2) if forwards else None,
    }


def compare(before: dict, after: dict) -> dict:
    """The ratios of two runs on one model: after / before for throughput, before / after for latency."""
    tb, ta = before["timed"], after["timed"]
    ratio = lambda a, b: round(a / b, 2) if a and b else None  # noqa: E731
    return {
        "requests_per_second": {
            "before": tb["requests_per_second"],
            "after": ta["requests_per_second"],
            "ratio": ratio(ta["requests_per_second"], tb["requests_per_second"]),
        },
        "texts_predicted_per_second": {
            "before": tb["texts_predicted_per_second"],
            "after": ta["texts_predicted_per_second"],
            "ratio": ratio(ta["texts_predicted_per_second"], tb["texts_predicted_per_second"]),
        },
        "median_ms": {
            kind: {
                "before": tb["latency"][kind].get("median_ms"),
                "after": ta["latency"][kind].get("median_ms"),
                "speedup": ratio(tb["latency"][kind].get("median_ms"), ta["latency"][kind].get("median_ms")),
            }
            for kind in ("all", *WELL_FORMED)
        },
        "p99_ms": {"before": tb["latency"]["all"].get("p99_ms"), "after": ta["latency"]["all"].get("p99_ms")},
        "rss_growth_after_warmup": {
            "before": before["rss"]["growth_after_warmup"],
            "after": after["rss"]["growth_after_warmup"],
            "limit": after["rss"]["tolerance"],
        },
        "rss_after_mb": {
            "before": round(before["rss"]["after_kb"] / 1024, 1) if before["rss"]["after_kb"] else None,
            "after": round(after["rss"]["after_kb"] / 1024, 1) if after["rss"]["after_kb"] else None,
        },
        "server_cpu_ms_per_request": {
            k: r.get("cpu_during_timed_run", {}).get("server_cpu_ms_per_request") for k, r in (("before", before), ("after", after))
        },
        "other_processes_cores_busy": {
            k: r.get("cpu_during_timed_run", {}).get("other_processes_cores_busy") for k, r in (("before", before), ("after", after))
        },
        "passed": {"before": before["passed"], "after": after["passed"]},
    }


# ----------------------------------------------------------------------------- the command
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")  # what decides the kernels and bfloat16 on a CPU


def environment() -> dict:
    import platform
    from importlib.metadata import PackageNotFoundError, version

    cpu, flags = "", set()
    with contextlib.suppress(OSError, StopIteration):
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
        flags = set(next(line.split(":", 1)[1].split() for line in open("/proc/cpuinfo") if line.startswith("flags")))
    versions = {}
    for pkg in ("textrnn", "torch", "numpy", "fastapi", "starlette", "uvicorn", "h11", "httptools", "uvloop", "pydantic", "httpx"):
        with contextlib.suppress(PackageNotFoundError):
            versions[pkg] = version(pkg)
    return {
        "cpu": cpu,
        "cpu_flags": {f: f in flags for f in CPU_FLAGS},
        "cpu_count": os.cpu_count(),
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "platform": platform.platform(),
        "python": platform.python_version(),
        **versions,
    }


def print_summary(result: dict) -> None:
    t, rss = result["timed"], result["rss"]
    c = result["config"]
    print(
        f"\n{t['answered']:,} of {t['planned']:,} requests answered at concurrency {c['concurrency']} in {t['seconds']:.1f} s: "
        f"{t['requests_per_second']:.1f} requests/s  (after {c['warmup_requests']} warm-up requests)"
    )
    print(f"{'kind':<15}{'count':>7}  {'statuses':<30}{'median ms':>10}{'p99 ms':>9}{'wrong':>7}")
    for kind in ("all", *MIX):
        row = t["latency"][kind]
        statuses = " ".join(f"{s}:{n}" for s, n in sorted(row.get("statuses", t["status_counts"]).items()))
        print(
            f"{kind:<15}{row['count']:>7}  {statuses:<30}{row.get('median_ms', 0):>10.1f}{row.get('p99_ms', 0):>9.1f}"
            f"{row.get('wrong', t['wrong_answers']):>7}"
        )
    print(
        f"5xx: {t['server_errors_5xx']}   transport errors: {t['transport_errors']}   4xx on well-formed: "
        f"{t['4xx_on_well_formed']}   4xx on malformed: {t['4xx_on_malformed']} of {t['malformed_sent']}"
    )
    mb = lambda kb: f"{kb / 1024:.1f}" if kb else "?"  # noqa: E731
    print(
        f"server RSS (MB): before {mb(rss['before_kb'])}, after warm-up {mb(rss['after_warmup_kb'])}, during "
        f"{mb(rss['during_min_kb'])}-{mb(rss['during_max_kb'])} ({len(rss['samples_during'])} samples), after "
        f"{mb(rss['after_kb'])}, 1 s later {mb(rss['after_idle_1s_kb'])}; growth after warm-up "
        f"{rss['growth_after_warmup']:+.1%} (limit {rss['tolerance']:.0%}; first half of the run "
        f"{rss['growth_first_half']:+.1%}, second half {rss['growth_second_half']:+.1%})"
    )
    cpu = result.get("cpu_during_timed_run") or {}
    if cpu:
        print(
            f"CPU during the timed run (cores busy on average): server {cpu.get('server_cores_busy')}, client "
            f"{cpu.get('client_cores_busy')}, other processes {cpu.get('other_processes_cores_busy')} of "
            f"{os.cpu_count()}; server {cpu.get('server_cpu_ms_per_request')} ms per request, client "
            f"{cpu.get('client_cpu_ms_per_request')} ms"
        )
    for name, ok in result["checks"].items():
        print(f"  [{'ok' if ok else 'FAIL'}] {name}")
    for example in t["wrong_examples"]:
        print("  wrong:", example)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", metavar="DIR", help="serve this model directory (default: train a small one on generated text)")
    p.add_argument("--requests", type=int, default=5000, help="timed requests (default: 5000)")
    p.add_argument("--concurrency", type=int, default=32, help="requests in flight at once (default: 32)")
    p.add_argument("--warmup", type=int, default=None, help="untimed requests first (default: max(concurrency, requests/10))")
    p.add_argument("--time-limit", type=float, default=600, help="hard limit in seconds for all requests (default: 600)")
    p.add_argument("--rss-tolerance", type=float, default=0.15, help="allowed RSS growth after the warm-up (default: 0.15)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--baseline-src",
        metavar="DIR",
        help="first run the server from this src folder (another checkout's), then from this one, and record both and their ratios",
    )
    p.add_argument("--output", metavar="FILE", help="results file (default: benchmarks/results/load-<date>.json)")
    args = p.parse_args(argv)
    if args.requests < 1 or args.concurrency < 1:
        p.error("--requests and --concurrency must be positive")
    with tempfile.TemporaryDirectory(prefix="textrnn-load-") as tmp:
        os.environ.setdefault("TEXTRNN_CACHE_DIR", str(Path(tmp) / "cache"))  # never the user's cache
        t0 = time.perf_counter()
        if args.model:
            model_dir, trained = Path(args.model), None
        else:
            print("training a small model on generated text ...", flush=True)
            model_dir = train_model(tmp, args.seed)
            trained = round(time.perf_counter() - t0, 2)
        runs, expected = {}, None
        if args.baseline_src:  # the model's own answers, once for both runs
            expected = Expected(model_dir, *text_pool(1000, args.seed))
        for label, src in ((("before", args.baseline_src),) if args.baseline_src else ()) + (("after", None),):
            if args.baseline_src:
                print(f"\n=== {label}: server code from {src or REPO / 'src'}", flush=True)
            runs[label] = run(
                model_dir,
                args.requests,
                args.concurrency,
                args.warmup,
                args.time_limit,
                args.seed,
                rss_tolerance=args.rss_tolerance,
                work_dir=tmp,
                src=src,
                expected=expected,
            )
    machine = environment()
    for r in runs.values():
        r["config"]["model"]["trained_here_seconds"] = trained
        if trained is not None:
            r["config"]["model"]["dir"] = "(generated in a temporary folder: benchmarks/load.py train_model)"
        r["machine"] = machine
    if args.baseline_src:
        result = {
            "benchmark": "load",
            "date": runs["after"]["date"],
            "machine": machine,
            "comparison": compare(runs["before"], runs["after"]),
            "before": runs["before"],
            "after": runs["after"],
            "passed": runs["after"]["passed"],
        }
    else:
        result = runs["after"]
    out = Path(args.output) if args.output else HERE / "results" / f"load-{result['date']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    for label, r in runs.items():
        if args.baseline_src:
            print(f"\n=== {label} ({r['config']['server']['src']})")
        print_summary(r)
    if args.baseline_src:
        c = result["comparison"]
        print(
            f"\nafter / before: {c['requests_per_second']['ratio']}x requests/s ({c['requests_per_second']['before']} -> "
            f"{c['requests_per_second']['after']}), median {c['median_ms']['all']['before']} -> {c['median_ms']['all']['after']} ms; "
            f"RSS growth after warm-up {c['rss_growth_after_warmup']['before']:+.1%} -> {c['rss_growth_after_warmup']['after']:+.1%}"
        )
    print(f"\nwrote {out}")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
