"""Optimisers, discriminative learning rates and learning-rate schedules from ``train.*``."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "sgdr", "onecycle")


def layer_groups(model: nn.Module, n: int) -> list[list[nn.Parameter]]:
    """Split the model's parameters into ``n`` contiguous groups, input side first.

    A model may define ``layer_groups()`` itself (like fast.ai's models); otherwise its layers
    (modules that own parameters, in definition order) are split into ``n`` runs of nearly equal
    length.
    """
    custom = getattr(model, "layer_groups", None)
    if callable(custom):
        groups = [list(g.parameters()) if isinstance(g, nn.Module) else list(g) for g in custom()]
        if len(groups) != n:
            raise ValueError(f"train.layer_lrs has {n} multipliers but the model defines "
                             f"{len(groups)} layer groups. Fix: give {len(groups)} multipliers.")
        return groups
    layers = [list(m.parameters(recurse=False)) for m in model.modules()]
    layers = [p for p in layers if p]
    if n > len(layers):
        raise ValueError(f"train.layer_lrs has {n} multipliers but the model has only "
                         f"{len(layers)} layers with parameters. Fix: give at most {len(layers)}.")
    bounds = [round(i * len(layers) / n) for i in range(n + 1)]
    return [[p for layer in layers[a:b] for p in layer] for a, b in zip(bounds, bounds[1:])]


def make_optimizer(model: nn.Module, config: Mapping[str, Any]) -> torch.optim.Optimizer:
    name = config["train.optimizer"]
    lr, wd = float(config["train.lr"]), float(config["train.weight_decay"])
    multipliers: Sequence[float] | None = config["train.layer_lrs"]
    if multipliers:
        groups = layer_groups(model, len(multipliers))
        params: Any = [{"params": g, "lr": lr * m} for g, m in zip(groups, multipliers) if g]
    else:
        params = model.parameters()
    momentum = float(config["train.momentum"])
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=wd,
                               nesterov=bool(config["train.nesterov"]) and momentum > 0)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=(momentum, 0.999), weight_decay=wd)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=(momentum, 0.999), weight_decay=wd)
    raise ValueError(f"train.optimizer={name!r} is unknown. Fix: use one of {OPTIMIZERS}.")


def lr_factor(config: Mapping[str, Any], epochs_done: float) -> float:
    """The learning-rate multiplier after ``epochs_done`` (fractional) epochs.

    * ``constant``: 1.
    * ``sgdr``: cosine annealing from 1 to 0 with warm restarts (Loshchilov & Hutter; fast.ai's
      ``CosAnneal``): the first cycle lasts ``cycle_len`` epochs, each next one ``cycle_mult``
      times longer.
    * ``onecycle``: cosine warm-up from 1/25 to 1 over the first 30% of training, then cosine
      annealing to 1/25e4 (the defaults of ``torch.optim.lr_scheduler.OneCycleLR``).

    ``warmup_epochs`` multiplies any schedule by a linear ramp from 0 to 1.
    """
    t = epochs_done
    schedule = config["train.schedule"]
    if schedule == "constant":
        factor = 1.0
    elif schedule == "sgdr":
        length, mult = float(config["train.cycle_len"]), float(config["train.cycle_mult"])
        while t >= length:
            t -= length
            length *= mult
        factor = 0.5 * (1 + math.cos(math.pi * t / length))
    elif schedule == "onecycle":
        p = min(t / max(float(config["train.epochs"]), 1e-9), 1.0)
        lo, end = 1 / 25, 1 / 25e4
        if p < 0.3:
            factor = lo + (1 - lo) * (1 - math.cos(math.pi * p / 0.3)) / 2
        else:
            factor = end + (1 - end) * (1 + math.cos(math.pi * (p - 0.3) / 0.7)) / 2
    else:
        raise ValueError(f"train.schedule={schedule!r} is unknown. Fix: use one of {SCHEDULES}.")
    warmup = float(config["train.warmup_epochs"])
    if warmup > 0:
        factor *= min(1.0, epochs_done / warmup)
    return factor


def make_scheduler(
    optimizer: torch.optim.Optimizer, config: Mapping[str, Any], steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step ``LambdaLR`` following :func:`lr_factor`; its state resumes with the step."""
    for check in (0.0, 0.5):  # fail on bad settings now, not at the first step
        lr_factor(config, check)
    if config["train.schedule"] == "sgdr" and (
        float(config["train.cycle_len"]) <= 0 or float(config["train.cycle_mult"]) < 1
    ):
        raise ValueError("sgdr needs train.cycle_len > 0 and train.cycle_mult >= 1.")
    steps = max(int(steps_per_epoch), 1)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(config, step / steps)
    )
