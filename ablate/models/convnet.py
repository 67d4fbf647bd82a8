"""The fast.ai lesson-7 CIFAR-10 family (plain, batch-norm and residual conv nets) as one class."""

from collections import OrderedDict
from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from ablate.models.layers import GLOBAL_POOLS, ModuleFactory, get_global_pool, get_norm_layer

POOLS = (*GLOBAL_POOLS, "max")


def _check_kernel_size(name: str, value: int) -> None:
    if value < 1 or value % 2 == 0:
        raise ValueError(f"{name} must be an odd integer >= 1 (e.g. 3 or 5), got {value}")


class ConvLayer(nn.Sequential):
    """conv -> ReLU -> norm (fast.ai's ``BnLayer``), or norm -> ReLU -> conv if ``preact``.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        kernel_size: Odd kernel size; padding is ``(kernel_size - 1) // 2`` ("same" at stride 1).
        stride: Convolution stride.
        norm: Constructor ``norm(num_channels)``, e.g. from :func:`get_norm_layer`.
        preact: Pre-activation ordering.
        bias: Whether the conv has a bias.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        kernel_size: int,
        stride: int,
        norm: ModuleFactory,
        preact: bool,
        bias: bool,
    ) -> None:
        conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride, (kernel_size - 1) // 2, bias=bias
        )
        if preact:
            super().__init__(norm(in_channels), nn.ReLU(), conv)
        else:
            super().__init__(conv, nn.ReLU(), norm(out_channels))


class Residual(nn.Module):
    """``y = x + f(x)`` (fast.ai's ``ResnetLayer``).

    Args:
        f: The residual branch; must preserve the input's shape.
    """

    def __init__(self, f: nn.Module) -> None:
        super().__init__()
        self.f = f

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.f(x)


class ConvNet(nn.Module):
    """Configurable CIFAR-10 conv net: fast.ai's lesson-7 ``Resnet`` and its ablations.

    Layout: ``features`` = a plain stem conv (``stem_kernel_size``, stride 1, to ``widths[0]``),
    then for each ``i >= 1`` a stage ``[down, pool, res1, res2]``: ``down`` a :class:`ConvLayer`
    ``widths[i-1] -> widths[i]`` (stride 2, or stride 1 followed by ``nn.MaxPool2d(2)`` as
    ``pool`` when ``pool="max"``; otherwise ``pool`` is ``nn.Identity``) and two stride-1
    layers, each wrapped in :class:`Residual` if ``residual``. With ``preact`` a final
    norm -> ReLU closes ``features`` (the stages end on a conv). Then ``pool`` (global pool, or
    flatten for ``pool="max"``), ``dropout`` and the linear ``classifier``.

    Compared with the lesson's ``Resnet([10, 16, 32, 64, 128], 10)`` (plain 5x5 stride-1 stem
    conv, ``[BnLayer(stride 2), ResnetLayer, ResnetLayer]`` per stage, ``F.adaptive_max_pool2d``
    then linear, ~0.82 CIFAR-10 accuracy), the baseline has the same topology, ordering
    (conv -> ReLU -> BN), bias-free convs before BN and global max pool. Differences: the default
    ``widths`` have three stages instead of four (``widths=(10, 16, 32, 64, 128)`` reproduces the
    lesson's); ``nn.BatchNorm2d`` with running statistics replaces the lesson's hand-rolled
    batch norm (which kept the last training batch's statistics for evaluation); padding is
    derived from the kernel size (the lesson hard-coded ``padding=1``); the output is logits, not
    ``log_softmax``.

    Args:
        widths: Channels of the stem, then of each stage; ``len(widths) - 1`` stages.
        num_classes: Number of output logits.
        in_channels: Input image channels.
        image_size: Input height and width; only used (and checked) for ``pool="max"``, where it
            sets the classifier's in-features.
        batch_norm: ``nn.BatchNorm2d`` in every conv layer (off: ``nn.Identity``).
        residual: Skip connections ``y = x + f(x)`` around the stride-1 layers (off: the same
            layers without the skip).
        preact: Pre-activation ordering BN -> ReLU -> conv instead of conv -> ReLU -> BN.
        kernel_size: Odd kernel size of the body convs.
        stem_kernel_size: Odd kernel size of the stem conv.
        pool: ``"adaptive_max"`` / ``"adaptive_avg"``: stride-2 downsampling and a global
            max / average pool. ``"max"``: stride-1 convs each followed by ``nn.MaxPool2d(2)``, and
            the final feature map flattened into the classifier.
        dropout: Dropout probability before the classifier (0: ``nn.Identity``).

    Raises:
        ValueError: On an even kernel size, an unknown ``pool``, an ``image_size`` too small for
            the number of stages with ``pool="max"``, or an out-of-range size or ``dropout``.
    """

    def __init__(
        self,
        *,
        widths: Sequence[int] = (16, 32, 64, 128),
        num_classes: int = 10,
        in_channels: int = 3,
        image_size: int = 32,
        batch_norm: bool = True,
        residual: bool = True,
        preact: bool = False,
        kernel_size: int = 3,
        stem_kernel_size: int = 5,
        pool: Literal["adaptive_max", "adaptive_avg", "max"] = "adaptive_max",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if not widths or min(widths) < 1:
            raise ValueError(f"widths must be a non-empty sequence of positive ints, got {widths}")
        for name, value in [
            ("num_classes", num_classes),
            ("in_channels", in_channels),
            ("image_size", image_size),
        ]:
            if value < 1:
                raise ValueError(f"{name} must be a positive int, got {value}")
        _check_kernel_size("kernel_size", kernel_size)
        _check_kernel_size("stem_kernel_size", stem_kernel_size)
        if pool not in POOLS:
            raise ValueError(f"unknown pool {pool!r}; valid choices: {', '.join(map(repr, POOLS))}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        n_stages = len(widths) - 1
        if pool == "max" and image_size < 2**n_stages:
            raise ValueError(
                f"image_size must be at least {2**n_stages} for pool='max' with {n_stages} "
                f"downsampling stages, got {image_size}"
            )

        norm = get_norm_layer("batchnorm" if batch_norm else "none")

        def layer(c_in: int, c_out: int, stride: int) -> nn.Module:
            return ConvLayer(
                c_in,
                c_out,
                kernel_size=kernel_size,
                stride=stride,
                norm=norm,
                preact=preact,
                bias=not batch_norm,
            )

        def body_layer(c: int) -> nn.Module:
            f = layer(c, c, stride=1)
            return Residual(f) if residual else f

        blocks: OrderedDict[str, nn.Module] = OrderedDict(
            stem=nn.Conv2d(
                in_channels, widths[0], stem_kernel_size, padding=(stem_kernel_size - 1) // 2
            )
        )
        for i, (c_in, c_out) in enumerate(zip(widths, widths[1:]), start=1):
            blocks[f"stage{i}"] = nn.Sequential(
                OrderedDict(
                    down=layer(c_in, c_out, stride=1 if pool == "max" else 2),
                    pool=nn.MaxPool2d(2) if pool == "max" else nn.Identity(),
                    res1=body_layer(c_out),
                    res2=body_layer(c_out),
                )
            )
        blocks["final_act"] = (
            nn.Sequential(norm(widths[-1]), nn.ReLU()) if preact else nn.Identity()
        )
        self.features = nn.Sequential(blocks)

        if pool == "max":
            self.pool: nn.Module = nn.Flatten()
            in_features = widths[-1] * (image_size // 2**n_stages) ** 2
        else:
            self.pool = get_global_pool(pool)()
            in_features = widths[-1]
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Linear(in_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map images ``[B, in_channels, H, W]`` to logits ``[B, num_classes]``."""
        return self.classifier(self.dropout(self.pool(self.features(x))))
