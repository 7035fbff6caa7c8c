"""A training batch in pieces: how many, on how many cores, and each piece's loss (plain or
adversarial) and gradients; the gradients of pieces run side by side are summed in order, so a
run is the same whichever thread finishes first.

Why pieces: on a CPU a batch of more than ``runtime.micro_batch_tokens`` tokens runs faster in
pieces whose activations stay in cache, and in bfloat16 the pieces run side by side, one core
each. Their gradients add up to the whole batch's.
"""

from __future__ import annotations

import contextlib
import functools
import math
from dataclasses import dataclass
from typing import Sequence, cast

import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel

from . import distributed
from .models import kl_divergence, loss_fn, members
from .runtime import autocast


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


def workers(device: torch.device, dtype: torch.dtype, ctx: distributed.Context) -> int:
    """How many training pieces run side by side, each on one core: on a CPU one per torch thread,
    in bfloat16 and in float32 alike. (Float32 pieces ran one after the other until 2026-11-29:
    side by side had measured slower, but with denormals kept; flushed, side by side wins in
    float32 too, 1.16-1.24x: benchmarks/results/float32-pieces-2026-11-29.json.) Not under DDP,
    whose processes already share out the cores and whose gradient hooks need backward()."""
    if device.type != "cpu" or ctx.is_distributed:
        return 1
    return torch.get_num_threads()


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


def sum_gradients(param: torch.Tensor, grads: list[torch.Tensor]) -> torch.Tensor:
    """The pieces' gradients summed in order. Sparse embedding gradients (each piece's rows) are
    added straight into one dense zero tensor: cheaper than adding the sparse tensors and making
    the sum dense (benchmarks/results/cpu-notes-2026-11-27.md)."""
    if not grads[0].is_sparse:
        return functools.reduce(torch.add, grads)
    dense = torch.zeros_like(param)
    for g in grads:
        dense.index_add_(0, g._indices()[0], g._values())
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
class Step:
    """One batch's loss and gradients: the network to run (the DDP wrapper, or the bare model),
    the bare model, the arithmetic, the class weights, the adversarial push and the virtual
    adversarial one (0: none). Under DDP only a step's last forward runs through the wrapper."""

    net: nn.Module
    model: nn.Module
    device: torch.device
    dtype: torch.dtype
    weights: torch.Tensor | None
    adversarial: float
    vat: float = 0.0

    def loss(
        self,
        ids: torch.Tensor,
        lens: torch.Tensor,
        y: torch.Tensor,
        module: nn.Module | None = None,
        generator: torch.Generator | None = None,
        hook=None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The loss and the logits (b, C); an ensemble's members each on their own loss."""
        with autocast(self.device, self.dtype):
            logits = (module or self.net)(ids, lens, generator=generator, embedding_hook=hook).float()  # (b, C) | (M, b, C)
        if logits.dim() == 3:  # each member on its own loss; the ensemble's prediction for the accuracy
            return torch.stack([loss_fn(member, y, self.weights) for member in logits]).mean(), logits.mean(0)
        return loss_fn(logits, y, self.weights), logits

    def adversarial_loss(
        self, ids: torch.Tensor, lens: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The loss on the texts plus the loss on their embeddings moved by ``adversarial`` (L2,
        per text) along the gradient of the first: Miyato et al.'s adversarial training."""
        embedded: list[torch.Tensor] = []

        def read(x: torch.Tensor) -> torch.Tensor:
            if not x.requires_grad:  # a frozen embedding: its output still gets a gradient
                x = x.detach().requires_grad_()
            embedded.append(x)
            return x

        # under DDP the first pass goes through the bare model: one DDP forward a step
        clean, logits = self.loss(ids, lens, y, self.model, generator, read)
        pushes = iter(adversarial_pushes(torch.autograd.grad(clean, embedded, retain_graph=True), lens, self.adversarial))
        last = self.model if self.vat else None  # virtual adversarial training's pass comes last
        pushed, _ = self.loss(ids, lens, y, last, generator, lambda x: x + next(pushes).to(x.dtype))
        return clean + pushed, logits

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
        self, ids: torch.Tensor, lens: torch.Tensor, y: torch.Tensor, rows: slice, batch_rows: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """This piece's share of the batch's mean loss, and its logits (b, C)."""
        ids, lens, y = ids[rows], lens[rows], y[rows]
        if self.adversarial:
            part, logits = self.adversarial_loss(ids, lens, y, generator)
        else:  # with virtual adversarial training its pass is the step's last, through the DDP wrapper
            part, logits = self.loss(ids, lens, y, self.model if self.vat else None, generator=generator)
        if self.vat:  # an ensemble's members each against the ensemble's clean prediction
            part = part + self.virtual_adversarial_loss(ids, lens, logits, y.dim() == 2, generator)
        return part * (len(logits) / batch_rows), logits

    def one_after_another(
        self, ids: torch.Tensor, lens: torch.Tensor, y: torch.Tensor, pieces: Sequence[slice], ctx: distributed.Context
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """backward() piece by piece, the gradients adding up in .grad; the loss and each piece's logits."""
        loss = torch.zeros(())
        parts: list[torch.Tensor] = []
        for k, rows in enumerate(pieces):
            last = k == len(pieces) - 1
            # DDP: one all-reduce a batch, at its last piece (under DDP, net is its wrapper)
            with cast(DistributedDataParallel, self.net).no_sync() if ctx.is_distributed and not last else contextlib.nullcontext():
                part, piece_logits = self.piece(ids, lens, y, rows, len(ids))
                part.backward()  # the weights change only at optimizer.step(), after the caller's checks
            loss, parts = (part.detach() if k == 0 else loss + part.detach()), parts + [piece_logits.detach()]
        return loss, parts

    def side_by_side(
        self, ids: torch.Tensor, lens: torch.Tensor, y: torch.Tensor, pieces: Sequence[slice], pool
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The pieces in ``pool``, one core each, each drawing its dropout masks from its own
        generator (seeded in order from torch's global one); their gradients summed in piece order
        into .grad."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        seeds = torch.randint(0, 2**62, (len(pieces),)).tolist()

        def run(rows: slice, seed: int):
            part, piece_logits = self.piece(ids, lens, y, rows, len(ids), torch.Generator().manual_seed(seed))
            return part.detach(), piece_logits.detach(), torch.autograd.grad(part, params, allow_unused=True)

        results = list(pool.map(run, pieces, seeds))  # under sparse_embeddings (the trainer holds it)
        for i, p in enumerate(params):  # summed in piece order: the same result every time
            grads = [r[2][i] for r in results if r[2][i] is not None]
            p.grad = sum_gradients(p, grads) if grads else None
        return sum(r[0] for r in results), [r[1] for r in results]
