"""Component resolvers, one per component family (timm style).

Each resolver accepts a registered name, a class or any callable returning an ``nn.Module``, and
returns the constructor. Models resolve their components once, at the top of ``__init__``, so an
unknown name fails at construction with a ``ValueError`` listing the valid choices.
"""

from collections.abc import Callable, Mapping

import torch
from torch import nn

ModuleFactory = Callable[..., nn.Module]


class GlobalMaxPool2d(nn.Module):
    """``[B, C, H, W] -> [B, C]`` by ``amax`` over the spatial dims.

    Used instead of ``nn.AdaptiveMaxPool2d(1)``, whose CUDA backward raises under
    ``torch.use_deterministic_algorithms(True)``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.amax(dim=(-2, -1))


class GlobalAvgPool2d(nn.Module):
    """``[B, C, H, W] -> [B, C]`` by ``mean`` over the spatial dims."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(-2, -1))


# ``nn.Identity`` ignores its constructor arguments, so it stands in for a switched-off norm.
NORM_LAYERS: Mapping[str, ModuleFactory] = {"batchnorm": nn.BatchNorm2d, "none": nn.Identity}
GLOBAL_POOLS: Mapping[str, ModuleFactory] = {
    "adaptive_max": GlobalMaxPool2d,
    "adaptive_avg": GlobalAvgPool2d,
}
RNN_CELLS: Mapping[str, ModuleFactory] = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}


def _resolve(
    arg: str, spec: str | ModuleFactory, registry: Mapping[str, ModuleFactory]
) -> ModuleFactory:
    if isinstance(spec, str):
        try:
            return registry[spec.lower()]
        except KeyError:
            valid = ", ".join(repr(name) for name in registry)
            raise ValueError(f"unknown {arg} {spec!r}; valid choices: {valid}") from None
    if callable(spec):
        return spec
    raise TypeError(f"{arg} must be a name, a class or a callable, got {type(spec).__name__}")


def get_norm_layer(norm: str | ModuleFactory) -> ModuleFactory:
    """Resolve a 2-D normalisation layer.

    Args:
        norm: ``"batchnorm"`` (``nn.BatchNorm2d``), ``"none"`` (``nn.Identity``), or a class or
            callable taking the number of channels.

    Returns:
        A constructor ``norm(num_channels) -> nn.Module``.
    """
    return _resolve("norm", norm, NORM_LAYERS)


def get_global_pool(pool: str | ModuleFactory) -> ModuleFactory:
    """Resolve a global pool ``[B, C, H, W] -> [B, C]``.

    Args:
        pool: ``"adaptive_max"`` (:class:`GlobalMaxPool2d`), ``"adaptive_avg"``
            (:class:`GlobalAvgPool2d`), or a class or callable taking no arguments.

    Returns:
        A constructor ``pool() -> nn.Module``.
    """
    return _resolve("pool", pool, GLOBAL_POOLS)


def get_rnn_cell(cell: str | ModuleFactory) -> ModuleFactory:
    """Resolve a recurrent layer stack.

    Args:
        cell: ``"rnn"``, ``"gru"`` or ``"lstm"`` (``nn.RNN`` / ``nn.GRU`` / ``nn.LSTM``), or a class
            or callable with the same constructor signature.

    Returns:
        A constructor ``cell(input_size, hidden_size, num_layers, **kwargs) -> nn.Module``.
    """
    return _resolve("cell", cell, RNN_CELLS)
