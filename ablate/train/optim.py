"""Optimisers, discriminative learning rates and learning-rate schedules from ``train.*``."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import CosineAnnealingWarmRestarts, LambdaLR, LRScheduler, OneCycleLR

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
    """The learning-rate multiplier after ``epochs_done`` (fractional) epochs, in closed form.

    :func:`make_scheduler` builds this schedule from torch's schedulers, per step; this is its
    specification (the tests hold the two together).

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


class LRSchedule:
    """The per-step schedule of the built-in loop: a torch scheduler times the warm-up ramp.

    ``step()`` once per optimiser step; ``state_dict()`` goes into every checkpoint and
    ``load_state_dict()`` resumes it exactly. The ramp is ours because torch has no scheduler
    that *multiplies* another (README: "linear warm-up, multiplies any schedule"): ``LinearLR``
    cannot start at 0, ``SequentialLR`` runs schedules one after the other (the cosine would start
    after the warm-up, not under it), and ``ChainedScheduler`` cannot combine a closed-form
    scheduler with a ramp (``LinearLR`` multiplies by the ratio of consecutive factors,
    ``MultiplicativeLR`` skips step 0). ``inner`` must compute its rates from its base rates
    alone (all three of :func:`make_scheduler`'s do), never from the rates the ramp scaled.
    """

    def __init__(self, inner: LRScheduler, warmup_epochs: float, steps_per_epoch: int) -> None:
        self.inner = inner
        self.optimizer = inner.optimizer
        self.warmup_epochs = float(warmup_epochs)
        self.steps_per_epoch = steps_per_epoch
        self.last_epoch = 0  # optimiser steps taken (torch's name)
        self._scale()
        # what `inner` put in the param groups (OneCycleLR's rates), for a legacy resume
        self._group_keys: list[dict[str, Any]] = [
            {k: g[k] for k in ("initial_lr", "max_lr", "min_lr") if k in g}
            for g in self.optimizer.param_groups
        ]

    def step(self) -> None:
        inner = self.inner
        # A one-cycle run holds its final rate past its planned end (steps_per_epoch is an
        # estimate for TextData with random_bptt); OneCycleLR itself would raise.
        if not (isinstance(inner, OneCycleLR) and inner.last_epoch >= inner.total_steps - 1):
            inner.step()
        self.last_epoch += 1
        self._scale()

    def _scale(self) -> None:
        if self.warmup_epochs <= 0:
            return
        ramp = min(1.0, self.last_epoch / self.steps_per_epoch / self.warmup_epochs)
        for group, lr in zip(self.optimizer.param_groups, self.inner.get_last_lr()):
            group["lr"] = lr * ramp

    def get_last_lr(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {"inner": self.inner.state_dict(), "last_epoch": self.last_epoch}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume from :meth:`state_dict` (the optimiser's state, rates included, loaded first)."""
        if "inner" not in state:  # a LambdaLR's state, from before this class: replay its steps
            for group, keys in zip(self.optimizer.param_groups, self._group_keys):
                group.update(keys)  # the loaded optimiser state has the LambdaLR's
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # "step() before optimizer.step()"
                for _ in range(int(state["last_epoch"]) - self.last_epoch):
                    self.step()
            return
        self.inner.load_state_dict(dict(state["inner"]))
        self.last_epoch = int(state["last_epoch"])


def make_scheduler(
    optimizer: torch.optim.Optimizer, config: Mapping[str, Any], steps_per_epoch: int
) -> LRSchedule:
    """The schedule :func:`lr_factor` describes, per step, from torch's schedulers."""
    steps = max(int(steps_per_epoch), 1)
    schedule = config["train.schedule"]
    inner: LRScheduler
    if schedule == "constant":
        # LambdaLR, not ConstantLR: ConstantLR scales the current rate, which the ramp changed
        inner = LambdaLR(optimizer, lambda step: 1.0)
    elif schedule == "sgdr":
        cycle_len, mult = config["train.cycle_len"], config["train.cycle_mult"]
        if not (cycle_len > 0 and mult >= 1 and mult == int(mult)):
            raise ValueError("sgdr needs train.cycle_len > 0 and a whole train.cycle_mult >= 1.")
        inner = CosineAnnealingWarmRestarts(
            optimizer, T_0=max(round(cycle_len * steps), 1), T_mult=int(mult), eta_min=0.0
        )
    elif schedule == "onecycle":
        total = max(round(float(config["train.epochs"]) * steps), 1)
        # OneCycleLR peaks at step pct_start * total_steps - 1 and bottoms out at step
        # total_steps - 1; these two settings put the peak at 30% of training and the final
        # rate at its end (step `total`), as lr_factor says. Momentum stays as train.momentum.
        inner = OneCycleLR(
            optimizer, max_lr=[group["lr"] for group in optimizer.param_groups],
            total_steps=total + 1, pct_start=(0.3 * total + 1) / (total + 1),
            anneal_strategy="cos", div_factor=25.0, final_div_factor=1e4, cycle_momentum=False,
        )
    else:
        raise ValueError(f"train.schedule={schedule!r} is unknown. Fix: use one of {SCHEDULES}.")
    return LRSchedule(inner, float(config["train.warmup_epochs"]), steps)
