"""Occlusion explanations: how much each token pushed the prediction.

A token's score is the predicted class's probability on the text minus its probability when that
one token's id is replaced by ``<unk>``: positive means the word supported the prediction, negative
means it argued against it. The text and all its occluded variants have one length, so they run as
one batch through the network (the recurrent layer's fast, unpacked path): a 300-token review costs
one forward pass of 301 rows, not 301 passes.

Tokens are the tokenizer's tokens. Tokens that truncation (``max_length``) cut off are never seen by
the network: they get score 0 and ``seen=False``.
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np
import torch

from .evaluation import probabilities
from .inference import forward
from .runtime import autocast, denormals_flushed, inference_dtype
from .text import UNK_ID, truncate

# rows x tokens per forward pass; above it the variants go in several batches to bound memory
_MAX_BATCH_TOKENS = 400_000


def forward_ids(clf: Any, ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Logits (B, C) for post-padded ids (B, T) int64 and lengths (B,), from a TextClassifier (torch)
    or any object with a ``forward_ids`` method (the ONNX runtime's OnnxClassifier)."""
    if hasattr(clf, "forward_ids"):
        return clf.forward_ids(ids, lengths)
    model = clf.model_
    device = next(model.parameters()).device  # the model may live on a GPU (textrnn.load(..., device=))
    dtype = inference_dtype(device, clf.config_.runtime.precision)  # the arithmetic of predict, so the scores match it
    with torch.inference_mode(), autocast(device, dtype), denormals_flushed():
        return forward(model, torch.from_numpy(ids).to(device), torch.from_numpy(lengths).to(device)).float().cpu().numpy()


def _batched_logits(clf: Any, ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    rows = max(1, _MAX_BATCH_TOKENS // max(ids.shape[1], 1))
    if len(ids) <= rows:
        return forward_ids(clf, ids, lengths)
    return np.concatenate([forward_ids(clf, ids[i : i + rows], lengths[i : i + rows]) for i in range(0, len(ids), rows)])


def explain(clf: Any, text: str) -> dict:
    """Predict ``text`` and score each of its tokens by occlusion.

    Returns ``tokens`` (all of the tokenizer's tokens), ``scores`` (one per token), ``seen`` (False
    for tokens cut by truncation), ``unknown`` (True for tokens outside the vocabulary: replacing
    ``<unk>`` by ``<unk>`` changes nothing, so their score is 0), ``label``, ``probability`` (of the
    label), ``probabilities`` (label -> probability) and ``truncated``.
    """
    if not isinstance(text, str):
        text = "" if text is None else str(text)
    t = clf.config_.text
    tokens = clf.tokenizer_(text)
    get = clf.vocab_.index.get
    all_ids = [get(w, UNK_ID) for w in tokens]
    # which token positions survive truncation: truncate the positions the same way as the ids
    kept = truncate(list(range(len(tokens))), t.length, t.truncating, t.head_fraction)
    ids = np.asarray([all_ids[i] for i in kept], dtype=np.int64)
    T = max(len(ids), 1)
    # row 0: the text; row 1 + j: the text with kept token j replaced by <unk>
    batch = np.zeros((len(ids) + 1, T), dtype=np.int64)  # (1+n, T)
    batch[:, : len(ids)] = ids
    if len(ids):
        batch[np.arange(1, len(ids) + 1), np.arange(len(ids))] = UNK_ID
    lengths = np.full(len(batch), len(ids), dtype=np.int64)
    multilabel = getattr(clf, "multilabel_", False)
    proba = probabilities(_batched_logits(clf, batch, lengths), multilabel)  # (1+n, K); multi-label: the most probable label's
    k = int(proba[0].argmax())
    drops = proba[0, k] - proba[1:, k]  # (n,)
    scores = [0.0] * len(tokens)
    seen = [False] * len(tokens)
    for j, pos in enumerate(kept):
        scores[pos] = float(drops[j]) if all_ids[pos] != UNK_ID else 0.0
        seen[pos] = True
    return {
        "tokens": tokens,
        "scores": scores,
        "seen": seen,
        "unknown": [i == UNK_ID for i in all_ids],
        "label": clf.classes_[k],
        "probability": float(proba[0, k]),
        "probabilities": {str(c): float(p) for c, p in zip(clf.classes_, proba[0])},
        "truncated": len(kept) < len(tokens),
        **({"labels": clf.labels_from(proba[:1])[0]} if multilabel else {}),  # every label over its threshold
    }


def format_text(explanation: dict, top: int | None = None) -> str:
    """The explanation as lines for a terminal: the prediction, then each token with its score."""
    e = explanation
    lines = [
        f"label: {e['label']}  probability {e['probability']:.4f}  ("
        + ", ".join(f"{c} {p:.4f}" for c, p in e["probabilities"].items())
        + ")",
        f"score = change in P({e['label']}) when the token is replaced by <unk>; + supports, - opposes",
    ]
    rows = list(zip(e["tokens"], e["scores"], e["seen"], e["unknown"]))
    if top:
        rows = sorted(rows, key=lambda r: -abs(r[1]))[:top]
    for tok, score, seen, unknown in rows:
        note = "  (not seen: cut by max_length)" if not seen else "  (unknown word)" if unknown else ""
        lines.append(f"  {score:+.4f}  {tok}{note}")
    if e["truncated"]:
        lines.append(f"  {sum(not s for s in e['seen'])} tokens were cut by max_length and not seen")
    return "\n".join(lines)


CSS = """
.textrnn-explain{font:16px/1.9 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d232a}
.textrnn-explain .tok{padding:1px 3px;border-radius:3px;white-space:pre-wrap}
.textrnn-explain .unseen{color:#9aa0a6;text-decoration:line-through}
.textrnn-explain .legend{font-size:13px;color:#5f6b76;margin:.4em 0}
.textrnn-explain .sw{display:inline-block;width:1em;height:1em;vertical-align:-2px;border-radius:2px;margin:0 4px}
"""


def token_color(score: float, scale: float) -> str:
    """Green for a token that supported the prediction, red for one that opposed it; the stronger,
    the more opaque. ``scale`` is the largest absolute score of the text."""
    if scale <= 0 or score == 0:
        return "transparent"
    a = min(abs(score) / scale, 1.0) * 0.85
    return f"rgba(22,163,74,{a:.3f})" if score > 0 else f"rgba(220,38,38,{a:.3f})"


def _join(tokens_html: list[tuple[str, str]]) -> str:
    """Tokens joined by spaces, except before closing punctuation and after opening punctuation."""
    out = []
    for i, (tok, piece) in enumerate(tokens_html):
        if i and tok not in {".", ",", "!", "?", ";", ":", ")", "]", "}", "%", "'"} and tokens_html[i - 1][0] not in {"(", "[", "{", "$"}:
            out.append(" ")
        out.append(piece)
    return "".join(out)


def highlight(explanation: dict) -> str:
    """An HTML fragment: the tokens, each highlighted by its score, with a legend."""
    e = explanation
    scale = max((abs(s) for s in e["scores"]), default=0.0)
    pieces = []
    for tok, score, seen in zip(e["tokens"], e["scores"], e["seen"]):
        title = f"{score:+.4f}" if seen else "not seen: cut by max_length"
        cls = "tok" if seen else "tok unseen"
        pieces.append(
            (
                tok,
                f'<span class="{cls}" style="background:{token_color(score, scale)}" '
                f'title="{html.escape(title)}" data-score="{score:.6f}">{html.escape(tok)}</span>',
            )
        )
    label = html.escape(str(e["label"]))
    legend = (
        f'<div class="legend"><span class="sw" style="background:rgba(22,163,74,.7)"></span>pushed toward '
        f'<b>{label}</b><span class="sw" style="background:rgba(220,38,38,.7)"></span>pushed away from it'
        + (" &middot; struck-through words were cut by max_length" if e["truncated"] else "")
        + "</div>"
    )
    return f'<div class="textrnn-explain">{legend}<div class="text">{_join(pieces)}</div></div>'


def to_html(explanation: dict, title: str = "textrnn explanation") -> str:
    """A self-contained page (inline CSS, nothing fetched) showing the prediction and the highlights."""
    e = explanation
    probs = ", ".join(f"{html.escape(c)} {p:.3f}" for c, p in e["probabilities"].items())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>
body{{max-width:860px;margin:2em auto;padding:0 1em;font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d232a}}
h1{{font-size:1.3em}} .pred{{font-size:1.1em;margin:.5em 0 1em}} .muted{{color:#5f6b76;font-size:.9em}}
{CSS}
</style></head><body>
<h1>{html.escape(title)}</h1>
<div class="pred">Predicted <b>{html.escape(str(e["label"]))}</b> with probability {e["probability"]:.3f}
<span class="muted">({probs})</span></div>
{highlight(e)}
<p class="muted">Score of a word: how much the probability of the predicted label drops when the word is
replaced by &lt;unk&gt; (occlusion). Hover a word to see its score.</p>
</body></html>
"""
