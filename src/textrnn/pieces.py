"""A training batch in pieces: how many, on how many cores, and each piece's loss (plain or
adversarial) and gradients; the gradients of pieces run side by side are summed in order, so a
run is the same whichever thread finishes first. A step's texts without labels (data.unlabelled)
run as pieces of their own after the labelled ones: they add the virtual adversarial and entropy
terms, never the supervised loss.

Why pieces: on a CPU a batch of more than ``runtime.micro_batch_tokens`` tokens runs faster in
pieces whose activations stay in cache, and in bfloat16 the pieces run side by side, one core
each. Their gradients add up to the whole batch's.
"""

from __future__ import annotations

import contextlib
import functools
import math
from dataclasses import dataclass, field
from typing import Callable, Sequence, cast

import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel

from . import distributed, fastrnn
from .config import AUTO
from .models import RNNClassifier, entropy, kl_divergence, loss_fn, members
from .runtime import autocast

MICRO_BATCH_TOKENS = 6000  # runtime.micro_batch_tokens "auto", except as piece_tokens says


def micro_batches(rows: int, length: int, max_tokens: int | None, min_pieces: int = 1) -> list[slice]:
    """The pieces a training batch of ``rows`` texts of ``length`` tokens runs in: one, unless it
    holds more than ``max_tokens`` (then as few pieces of equal size as keep each within that many
    tokens) or ``min_pieces`` asks for more (one per worker); at least 8 texts each. oneDNN's
    recurrent layer slows down once a batch's activations leave the cache; short batches stay whole
    (measured: benchmarks/results/cpu-notes-2026-11-27.md)."""
    count = max(math.ceil(rows * length / max_tokens) if max_tokens else 1, min_pieces)
    count = math.ceil(count / min_pieces) * min_pieces  # as many for each worker (cpu-notes)
    count = min(count, max(1, rows // 8))  # pieces of equal size: no small remainder
    if count <= 1:
        return [slice(0, rows)]
    per = math.ceil(rows / count)
    return [slice(i, min(i + per, rows)) for i in range(0, rows, per)]


def piece_tokens(setting: int | str | None, model: nn.Module, device: torch.device, dtype: torch.dtype) -> int | None:
    """``runtime.micro_batch_tokens`` decided: a number (or None) as given; "auto": 6000 tokens a
    piece, except for LSTM models without embedding dropout trained in float32 on a CPU through the
    C kernel (fastrnn.lstm_train): there one piece per core (None). That kernel streams its
    activations whatever a piece's size, and it projects each distinct word of a piece once, so a
    larger piece shares more words: the seed recipe trained an IMDB epoch 1.08x faster in one piece
    per core (32 texts) than in pieces of 16 under TEXTRNN_CPU=avx2 and 1.03x in float32 on the Xeon's
    AVX-512; the default model (a dropout mask per text: no word is shared across texts) 1.00x under
    AVX2 and 0.89x on AVX-512, where its float32 layer is oneDNN's and cache matters (medians of 3:
    benchmarks/piece_tokens.py, results/piece-tokens-2026-11-30.json)."""
    if setting != AUTO:
        return cast("int | None", setting)
    kernel = device.type == "cpu" and dtype == torch.float32 and fastrnn.library() is not None
    shared = all(isinstance(m, RNNClassifier) and m.config.cell == "lstm" and not m.config.embedding_dropout for m in members(model))
    return None if kernel and shared else MICRO_BATCH_TOKENS


def workers(device: torch.device, dtype: torch.dtype, ctx: distributed.Context) -> int:
    """How many training pieces run side by side, each on one core: on a CPU one per torch thread,
    in bfloat16 and in float32 alike. (Float32 pieces ran one after the other until 2026-11-29:
    side by side had measured slower, but with denormals kept; flushed, side by side wins in
    float32 too, 1.16-1.24x: benchmarks/results/float32-pieces-2026-11-29.json.) Not under DDP,
    whose processes already share out the cores and whose gradient hooks need backward()."""
    if device.type != "cpu" or ctx.is_distributed:
        return 1
    return torch.get_num_threads()


def accumulate(model: nn.Module, grads: Sequence[torch.Tensor | None]) -> None:
    """Add ``grads`` (one per trainable parameter of ``model``, in order; None: none) into .grad."""
    for p, g in zip([p for p in model.parameters() if p.requires_grad], grads, strict=True):
        if g is not None:
            p.grad = g if p.grad is None else p.grad + g


def adversarial_pushes(grads: Sequence[torch.Tensor], lengths: torch.Tensor, epsilon: float) -> list[torch.Tensor]:
    """For each (B, T, E) gradient of the loss with respect to embedded texts, the push of L2 norm
    ``epsilon`` per text along it (over the text's real positions only): to first order, the change
    of that size that raises the loss most (Miyato et al. 2016). No gradient, no push."""
    pushes = []
    for g in grads:
        valid = torch.arange(g.shape[1], device=g.device)[None, :] < lengths.clamp(min=1)[:, None]  # (B, T)
        g = g * valid.unsqueeze(-1).to(g.dtype)
        norm = g.flatten(1).norm(dim=1).clamp(min=1e-12)  # (B,)
        pushes.append((epsilon * g / norm[:, None, None]).detach())
    return pushes


class GradientSum:
    """The pieces' gradients of each parameter, summed in order. Sparse embedding gradients (each
    piece's rows) are added into one dense tensor kept from step to step: only the rows the last
    step touched are zeroed again, not the whole table, whose fresh allocation and zero-fill each
    step were ~10% of the seed model's step on one core while the other waited
    (benchmarks/results/cpu-notes-2026-11-27.md). The trainer owns that tensor between steps:
    nothing but clipping (a scaling, which keeps zero rows zero) writes into it."""

    def __init__(self) -> None:
        self.dense: dict[torch.Tensor, tuple[torch.Tensor, torch.Tensor]] = {}  # param -> (sum, rows it holds)

    def __call__(self, param: torch.Tensor, grads: list[torch.Tensor]) -> torch.Tensor:
        if not grads[0].is_sparse:
            return functools.reduce(torch.add, grads)
        kept = self.dense.get(param)
        if kept is None or kept[0].shape != param.shape or kept[0].dtype != param.dtype:
            dense = torch.zeros_like(param)
        else:
            dense = kept[0].index_fill_(0, kept[1], 0)
        rows = [g._indices()[0] for g in grads]
        for r, g in zip(rows, grads):
            dense.index_add_(0, r, g._values())
        self.dense[param] = (dense, torch.cat(rows))
        return dense


@contextlib.contextmanager
def sparse_embeddings(model: nn.Module, on: bool = True):
    """While training pieces side by side: each piece's embedding gradient sparse (its rows only),
    made dense once after the sum, not one dense zero-fill of the whole table per piece
    (benchmarks/results/cpu-notes-2026-11-27.md). Held for the whole run, not flipped every step;
    the setting changes only the gradient's layout, never a number. ``on=False``: nothing."""
    if not on:
        yield
        return
    embeddings = [mod for mod in model.modules() if isinstance(mod, nn.Embedding)]
    before = [mod.sparse for mod in embeddings]
    for mod in embeddings:
        mod.sparse = True
    try:
        yield
    finally:
        for mod, was in zip(embeddings, before):
            mod.sparse = was


# The probe of virtual adversarial training's power iteration: an L2 norm per text, small beside
# an embedded text's own (~8 a token at embedding 64) yet visible in bfloat16.
VAT_XI = 0.1


@dataclass
class Unlabelled:
    """A step's texts without labels: ids (b, T), lengths (b,), and the pieces they run in."""

    ids: torch.Tensor
    lens: torch.Tensor
    pieces: Sequence[slice]


# A piece of a step as a function of the generator its dropout masks come from: its share of the
# step's loss (whose graph holds what is not yet in the known gradients), its logits (None for a
# piece of texts without labels: they have no accuracy), and the gradients of the rest of that
# loss computed already (one per trainable parameter; None: nothing computed yet).
Job = Callable[[torch.Generator | None], tuple[torch.Tensor, torch.Tensor | None, "list[torch.Tensor | None] | None"]]


@dataclass
class Step:
    """One batch's loss and gradients: the network to run (the DDP wrapper, or the bare model),
    the bare model, the arithmetic, the class weights, the adversarial push, the virtual
    adversarial one (0: none), the weight of entropy minimisation (0: none) and label smoothing
    (0: none). Under DDP only a step's last forward runs through the wrapper."""

    net: nn.Module
    model: nn.Module
    device: torch.device
    dtype: torch.dtype
    weights: torch.Tensor | None
    adversarial: float
    vat: float = 0.0
    entropy_min: float = 0.0
    label_smoothing: float = 0.0
    sum_gradients: GradientSum = field(default_factory=GradientSum)

    def forward(
        self, ids: torch.Tensor, lens: torch.Tensor, module: nn.Module | None = None, generator: torch.Generator | None = None, hook=None
    ) -> torch.Tensor:
        """The logits (b, C), an ensemble's members' (M, b, C), in float32."""
        with autocast(self.device, self.dtype):
            return (module or self.net)(ids, lens, generator=generator, embedding_hook=hook).float()

    def supervised(self, logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The loss of logits (b, C) | (M, b, C), and the prediction (b, C): an ensemble's members
        each on their own loss, their mean for the accuracy."""
        if logits.dim() == 3:
            e = self.label_smoothing
            return torch.stack([loss_fn(member, y, self.weights, label_smoothing=e) for member in logits]).mean(), logits.mean(0)
        return loss_fn(logits, y, self.weights, label_smoothing=self.label_smoothing), logits

    def loss(
        self,
        ids: torch.Tensor,
        lens: torch.Tensor,
        y: torch.Tensor,
        module: nn.Module | None = None,
        generator: torch.Generator | None = None,
        hook=None,
        entropy_min: float = 0.0,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The loss and the logits (b, C), plus ``entropy_min`` times the mean entropy of the prediction."""
        logits = self.forward(ids, lens, module, generator, hook)  # (b, C) | (M, b, C)
        loss, prediction = self.supervised(logits, y)
        if entropy_min:
            loss = loss + entropy_min * entropy(logits, y.dim() == 2)
        return loss, prediction

    def adversarial_loss(
        self,
        ids: torch.Tensor,
        lens: torch.Tensor,
        y: torch.Tensor,
        generator: torch.Generator | None = None,
        entropy_min: float = 0.0,
        scale: float = 1.0,
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor | None] | None]:
        """``scale`` times the loss on the texts plus the loss on their embeddings moved by
        ``adversarial`` (L2, per text) along the gradient of the first: Miyato et al.'s adversarial
        training. The push follows the supervised loss alone; ``entropy_min`` times the texts' mean
        entropy is added after. Without it, the one backward pass through the clean texts that
        finds the push also gives the weights' gradients of their loss (known, returned), and the
        loss returned carries only the pushed pass's graph: one backward through the clean pass a
        step, not two (the recurrent kernel computes every gradient whenever it runs backward)."""
        embedded: list[torch.Tensor] = []

        def read(x: torch.Tensor) -> torch.Tensor:
            if not x.requires_grad:  # a frozen embedding: its output still gets a gradient
                x = x.detach().requires_grad_()
            embedded.append(x)
            return x

        # under DDP the first pass goes through the bare model: one DDP forward a step
        raw = self.forward(ids, lens, self.model, generator, read)
        clean, logits = self.supervised(raw, y)
        params = [p for p in self.model.parameters() if p.requires_grad] if not entropy_min else []
        grads = torch.autograd.grad(clean, [*embedded, *params], retain_graph=bool(entropy_min), allow_unused=True)
        pushes = iter(adversarial_pushes(cast(Sequence[torch.Tensor], grads[: len(embedded)]), lens, self.adversarial))
        last = self.model if self.vat else None  # virtual adversarial training's pass comes last
        pushed, _ = self.loss(ids, lens, y, last, generator, lambda x: x + next(pushes).to(x.dtype))
        if entropy_min:
            return (clean + pushed + entropy_min * entropy(raw, y.dim() == 2)) * scale, logits, None
        known: list[torch.Tensor | None] = [None if g is None else g * scale for g in grads[len(embedded) :]]
        return (clean.detach() + pushed) * scale, logits, known

    def virtual_adversarial_loss(
        self, ids: torch.Tensor, lens: torch.Tensor, clean: torch.Tensor, multilabel: bool, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """KL(prediction || prediction on the embeddings pushed by ``vat``), the push along the
        direction that changes the prediction most, found by one power iteration from a random
        direction of norm VAT_XI (Miyato et al. 2017). Labels are not used."""
        target = clean.detach()
        dim = members(self.model)[0].embedding.embedding_dim
        start = torch.randn(ids.shape[0], ids.shape[1], dim, generator=generator, device=ids.device)
        probe = adversarial_pushes([start], lens, VAT_XI)[0].requires_grad_()
        with autocast(self.device, self.dtype):
            moved = self.model(ids, lens, generator=generator, embedding_hook=lambda x: x + probe.to(x.dtype)).float()
        (direction,) = torch.autograd.grad(kl_divergence(target, moved, multilabel), probe)
        push = adversarial_pushes([direction], lens, self.vat)[0]
        with autocast(self.device, self.dtype):
            pushed = self.net(ids, lens, generator=generator, embedding_hook=lambda x: x + push.to(x.dtype)).float()
        return kl_divergence(target, pushed, multilabel)

    def piece(
        self,
        ids: torch.Tensor,
        lens: torch.Tensor,
        y: torch.Tensor,
        rows: slice,
        batch_rows: int,
        generator: torch.Generator | None = None,
        all_rows: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor | None] | None]:
        """This piece's share of the batch's mean loss, its logits (b, C) and the gradients of the
        loss computed already (adversarial training's clean pass; see Job). ``all_rows``: the
        step's labelled and unlabelled rows, when it has unlabelled ones; the virtual adversarial
        term is then a mean over all of them, and entropy minimisation is theirs (unlabelled_piece)."""
        ids, lens, y = ids[rows], lens[rows], y[rows]
        entropy_min = self.entropy_min if all_rows is None else 0.0
        share, known = len(ids) / batch_rows, None
        if self.adversarial:
            part, logits, known = self.adversarial_loss(ids, lens, y, generator, entropy_min, share)
        else:  # with virtual adversarial training its pass is the step's last, through the DDP wrapper
            part, logits = self.loss(ids, lens, y, self.model if self.vat else None, generator=generator, entropy_min=entropy_min)
            part = part * share
        if not self.vat:
            return part, logits, known
        # an ensemble's members each against the ensemble's clean prediction
        kl = self.virtual_adversarial_loss(ids, lens, logits, y.dim() == 2, generator)
        return part + kl * (len(ids) / (all_rows or batch_rows)), logits, known

    def unlabelled_piece(
        self, texts: Unlabelled, rows: slice, multilabel: bool, all_rows: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """This piece of the step's texts without labels: its share of ``entropy_min`` times their
        mean entropy, and of the virtual adversarial term's mean over the step's ``all_rows``
        (labelled and unlabelled). No label enters it; its last pass goes through ``net``."""
        ids, lens = texts.ids[rows], texts.lens[rows]
        part = torch.zeros(())
        if self.entropy_min:  # with virtual adversarial training its pass is the step's last
            logits = self.forward(ids, lens, self.model if self.vat else None, generator)  # (b, C) | (M, b, C)
            part = self.entropy_min * entropy(logits, multilabel) * (len(ids) / len(texts.ids))
        elif self.vat:  # the prediction that virtual adversarial training holds still
            with torch.no_grad():
                logits = self.forward(ids, lens, self.model, generator)
        if self.vat:  # an ensemble's members each against the ensemble's clean prediction, as on labelled texts
            clean = (logits.mean(0) if logits.dim() == 3 else logits).detach()
            part = part + self.virtual_adversarial_loss(ids, lens, clean, multilabel, generator) * (len(ids) / all_rows)
        return part

    def jobs(
        self, ids: torch.Tensor, lens: torch.Tensor, y: torch.Tensor, pieces: Sequence[slice], unlabelled: Unlabelled | None
    ) -> list[Job]:
        """A step's pieces: the labelled ones, then those of its texts without labels (if any)."""
        if unlabelled is None:  # the labelled step exactly as it was before texts without labels
            return [functools.partial(self.piece, ids, lens, y, rows, len(ids)) for rows in pieces]
        all_rows = len(ids) + len(unlabelled.ids)
        labelled: list[Job] = [functools.partial(self.piece, ids, lens, y, rows, len(ids), all_rows=all_rows) for rows in pieces]
        return labelled + [
            lambda generator, rows=rows: (self.unlabelled_piece(unlabelled, rows, y.dim() == 2, all_rows, generator), None, None)
            for rows in unlabelled.pieces
        ]

    def one_after_another(
        self,
        ids: torch.Tensor,
        lens: torch.Tensor,
        y: torch.Tensor,
        pieces: Sequence[slice],
        ctx: distributed.Context,
        unlabelled: Unlabelled | None = None,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """backward() piece by piece, the gradients adding up in .grad; the loss and each labelled piece's logits."""
        loss = torch.zeros(())
        parts: list[torch.Tensor] = []
        jobs = self.jobs(ids, lens, y, pieces, unlabelled)
        for k, job in enumerate(jobs):
            last = k == len(jobs) - 1
            # DDP: one all-reduce a batch, at its last piece (under DDP, net is its wrapper)
            with cast(DistributedDataParallel, self.net).no_sync() if ctx.is_distributed and not last else contextlib.nullcontext():
                part, piece_logits, known = job(None)
                if known is not None:  # in .grad before backward(): DDP reduces what .grad holds
                    accumulate(self.model, known)
                part.backward()  # the weights change only at optimizer.step(), after the caller's checks
            loss = part.detach() if k == 0 else loss + part.detach()
            parts += [] if piece_logits is None else [piece_logits.detach()]
        return loss, parts

    def side_by_side(
        self, ids: torch.Tensor, lens: torch.Tensor, y: torch.Tensor, pieces: Sequence[slice], pool, unlabelled: Unlabelled | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The pieces in ``pool``, one core each, each drawing its dropout masks from its own
        generator (seeded in order from torch's global one); their gradients summed in piece order
        into .grad."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        jobs = self.jobs(ids, lens, y, pieces, unlabelled)
        seeds = torch.randint(0, 2**62, (len(jobs),)).tolist()

        def run(job: Job, seed: int):
            part, piece_logits, known = job(torch.Generator().manual_seed(seed))
            logits = None if piece_logits is None else piece_logits.detach()
            grads: list[torch.Tensor | None] = (
                [*torch.autograd.grad(part, params, allow_unused=True)] if part.requires_grad else [None] * len(params)
            )
            if known is not None:  # added here, on this piece's core (sparse ones: their rows joined)
                grads = [g if k is None else k if g is None else k + g for k, g in zip(known, grads, strict=True)]
            return part.detach(), logits, grads

        results = list(pool.map(run, jobs, seeds))  # under sparse_embeddings (the trainer holds it)
        for i, p in enumerate(params):  # summed in piece order: the same result every time
            grads = [r[2][i] for r in results if r[2][i] is not None]
            p.grad = self.sum_gradients(p, grads) if grads else None
        return sum(r[0] for r in results), [r[1] for r in results if r[1] is not None]
