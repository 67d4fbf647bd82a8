"""Cost figures of a trial: parameters, training FLOPs per sample, peak memory."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


_FLOPS: dict[tuple[Any, ...], float] = {}


def train_flops_per_sample(
    model: nn.Module,
    x: torch.Tensor,
    loss_fn: torch.nn.Module,
    y: torch.Tensor,
    key: Any = None,
) -> float:
    """FLOPs of one forward and backward pass per sample, counted by ``FlopCounterMode``.

    The count runs on a copy of the model on the ``meta`` device (no compute, no memory, no
    change to the real model's running statistics, RNG or gradients). With a hashable ``key``
    (e.g. the model's config), the count is cached: every seed of a variant has the same cost.
    """
    cache_key = None if key is None else (key, tuple(x.shape), tuple(y.shape))
    if cache_key is not None and cache_key in _FLOPS:
        return _FLOPS[cache_key]
    flops = _count(model, x, loss_fn, y)
    if cache_key is not None:
        _FLOPS[cache_key] = flops
    return flops


def _count(model: nn.Module, x: torch.Tensor, loss_fn: torch.nn.Module, y: torch.Tensor) -> float:
    try:
        meta = copy.deepcopy(model).to("meta")
    except Exception:  # e.g. a stateful model holding a graph: fall back to a real copy
        meta = copy.deepcopy(_without_state(model))
    device = next(meta.parameters()).device if any(True for _ in meta.parameters()) else "cpu"
    xm, ym = x.to(device), y.to(device)
    if hasattr(meta, "reset_state"):
        meta.reset_state()  # type: ignore[operator]  # torch's stub: Module attrs are Tensor | Module
    with FlopCounterMode(display=False) as counter:
        out = meta(xm)
        loss_fn(out.reshape(-1, out.shape[-1]) if out.dim() > 2 else out, ym.reshape(-1)).backward()
    return counter.get_total_flops() / max(x.shape[0], 1)


def _without_state(model: nn.Module) -> nn.Module:
    if hasattr(model, "reset_state"):
        model.reset_state()  # type: ignore[operator]  # torch's stub: Module attrs are Tensor | Module
    return model


class PeakMemory:
    """Peak memory of one trial, measured from when this object is made (the trial's start).

    CUDA: the most memory torch allocated on the device (its peak statistics are reset here).
    CPU on Linux: the process's peak resident set (``VmHWM``), reset here by writing ``5`` to
    ``/proc/self/clear_refs``; it includes the Python process and torch themselves. Elsewhere
    there is no per-trial figure (``ru_maxrss`` is a maximum over the whole process's life, so
    it would carry over from earlier trials): :meth:`mb` returns None.
    """

    STATUS = Path("/proc/self/status")

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.measured = True
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            return
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            self.measured = False

    def mb(self) -> float | None:
        """The peak so far in MiB, or None where it can't be measured per trial."""
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        if not self.measured:
            return None
        for line in self.STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**10  # kB
        return None
