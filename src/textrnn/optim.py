"""What training optimizes and how: the loss, class weights, the optimizer and its schedule, and
the fused Adam step split across the worker threads."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn as nn

from .config import TrainConfig, decided

ENCODER = ("embedding", "rnn")  # the layers a pretrained encoder gives (see pretrain.py)


def is_encoder(name: str) -> bool:
    """Whether the parameter ``name`` (``rnn.weight_ih_l0``, ``members.0.embedding.weight``) is an encoder's."""
    return any(part in ENCODER for part in name.split("."))


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    params: list[nn.Parameter] | list[dict[str, Any]] = [p for p in model.parameters() if p.requires_grad]
    if isinstance(config.learning_rate, str):
        decided(config.learning_rate, "train.learning_rate")  # raises: "auto" is decided before (adaptive.py)
    lr, wd = float(config.learning_rate), config.weight_decay
    if config.encoder_lr_multiplier != 1.0:  # discriminative rates (ULMFiT): the encoder's group first
        encoder = [p for n, p in model.named_parameters() if p.requires_grad and is_encoder(n)]
        ids = {id(p) for p in encoder}
        params = [
            g
            for g in ({"params": encoder, "lr": lr * config.encoder_lr_multiplier}, {"params": [p for p in params if id(p) not in ids]})
            if g["params"]
        ]
    if config.optimizer in ("adam", "adamw"):
        cls = torch.optim.Adam if config.optimizer == "adam" else torch.optim.AdamW
        # The fused kernel updates all parameters in one pass: faster training steps on a CPU for
        # the course's model, whose 2.6M embedding weights dominate the update (cpu-notes, in
        # benchmarks/results/).
        try:
            return cls(params, lr=lr, weight_decay=wd, fused=True)
        except (RuntimeError, TypeError, ValueError):  # older torch: no fused CPU kernel
            return cls(params, lr=lr, weight_decay=wd)
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=wd)
    return torch.optim.RMSprop(params, lr=lr, weight_decay=wd)


def make_schedule(optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: int):
    if config.schedule == "onecycle":
        total = max(total_steps, 1)
        # torch divides by (pct_start * total - 1): zero for 4 steps in all; warm up for 2 steps then
        pct_start = 0.25 if total != 4 else 0.5
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=[g["lr"] for g in optimizer.param_groups],
            total_steps=total,
            pct_start=pct_start,
            anneal_strategy="cos",
            div_factor=10.0,
            final_div_factor=100.0,
        )
    if config.schedule == "linear":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1 - step / max(total_steps, 1)))
    return None


def balanced_weights(targets: np.ndarray, num_classes: int) -> torch.Tensor:
    counts = np.bincount(targets, minlength=num_classes).astype(np.float64)
    w = len(targets) / (num_classes * np.maximum(counts, 1))
    return torch.tensor(w, dtype=torch.float32)


def step_in_parts(optimizer: torch.optim.Optimizer, pool, parts: int) -> bool:
    """``optimizer.step()`` for fused Adam or AdamW on the CPU, with the update of every large
    parameter split by rows into ``parts`` that run side by side in ``pool`` (one core each): the
    same elementwise arithmetic, on all cores instead of one (the seed model's 2.6M embedding
    weights dominate a step's update). Returns False, having done nothing, where that does not
    apply: no pool, another optimizer or option, or no state yet (the first step makes it)."""
    if pool is None or not isinstance(optimizer, torch.optim.Adam):
        return False
    jobs: list[list] = [[] for _ in range(parts)]
    steps = []
    for group in optimizer.param_groups:
        if (
            not group.get("fused")
            or group["amsgrad"]
            or group["maximize"]
            or group.get("capturable")
            or group.get("differentiable")
            or torch.is_tensor(group["lr"])
        ):
            return False
        # params, grads, exp_avgs, exp_avg_sqs, steps
        lists: list[tuple[list[torch.Tensor], ...]] = [([], [], [], [], []) for _ in range(parts)]
        for p in group["params"]:
            if p.grad is None:
                continue
            state = optimizer.state.get(p)
            if not state or p.grad.is_sparse or p.device.type != "cpu":
                return False
            steps.append(state["step"])
            tensors = (p, p.grad, state["exp_avg"], state["exp_avg_sq"])
            if p.dim() and p.shape[0] >= parts and p.numel() >= 1 << 16:
                for k, piece in enumerate(zip(*(t.tensor_split(parts) for t in tensors))):  # row views
                    for dest, t in zip(lists[k], (*piece, state["step"])):
                        dest.append(t)
            else:
                for dest, t in zip(lists[0], (*tensors, state["step"])):
                    dest.append(t)
        for k in range(parts):
            jobs[k].append((group, lists[k]))
    decoupled = isinstance(optimizer, torch.optim.AdamW) or optimizer.defaults.get("decoupled_weight_decay", False)
    update = torch._fused_adamw_ if decoupled else torch._fused_adam_

    def run(job) -> None:
        for group, (params, grads, exp_avgs, exp_avg_sqs, state_steps) in job:
            if params:
                beta1, beta2 = group["betas"]
                update(
                    params,
                    grads,
                    exp_avgs,
                    exp_avg_sqs,
                    [],
                    state_steps,
                    amsgrad=False,
                    lr=group["lr"],
                    beta1=beta1,
                    beta2=beta2,
                    weight_decay=group["weight_decay"],
                    eps=group["eps"],
                    maximize=False,
                    grad_scale=None,
                    found_inf=None,
                )

    torch._foreach_add_(steps, 1)  # once per parameter, as Adam.step does
    list(pool.map(run, jobs))
    # what the step wrapper of an LR scheduler records; torch's Optimizer does not declare the attribute
    # (lr_scheduler.py sets it under a type: ignore of its own)
    optimizer._opt_called = True  # type: ignore[attr-defined]
    return True
