"""A tabular net in the style of fast.ai's lesson-4 ``tabular_learner``: linear -> batch norm ->
ReLU blocks, with the same component toggles as :class:`ablate.models.ConvNet` where they make
sense for rows of features (batch norm, residual connections, widths, dropout)."""

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from ablate.models.convnet import Residual


class LinearLayer(nn.Sequential):
    """linear -> norm -> ReLU (fast.ai's tabular block, without its dropout).

    Args:
        in_features: Input features.
        out_features: Output features.
        batch_norm: ``nn.BatchNorm1d`` after the linear layer (off: ``nn.Identity``, and the
            linear layer gets a bias).
    """

    def __init__(self, in_features: int, out_features: int, *, batch_norm: bool) -> None:
        super().__init__(
            nn.Linear(in_features, out_features, bias=not batch_norm),
            nn.BatchNorm1d(out_features) if batch_norm else nn.Identity(),
            nn.ReLU(),
        )


class MLP(nn.Module):
    """Configurable tabular net: the ConvNet's ablations on rows of features.

    Layout: ``features`` = one :class:`LinearLayer` per entry of ``widths`` (the first from
    ``in_features``), each wrapped in :class:`~ablate.models.convnet.Residual` (``y = x + f(x)``)
    if ``residual`` and its input and output widths agree; then ``dropout`` and the linear
    ``classifier``. With the default ``widths=(64, 64, 64)`` the first layer is plain and the
    other two are residual, as the ConvNet's stem is plain and its stages' body layers are
    residual. The inputs are used as given: standardise the features in the data function (the
    lesson normalises continuous columns before the net sees them).

    Args:
        in_features: Features per row (the built-in loop passes the data's).
        num_classes: Number of output logits (the built-in loop passes the data's).
        widths: Output width of each hidden layer.
        batch_norm: ``nn.BatchNorm1d`` in every hidden layer (off: ``nn.Identity``).
        residual: Skip connections around the hidden layers whose input and output widths agree
            (off: the same layers without the skip).
        dropout: Dropout probability before the classifier (0: ``nn.Identity``).

    Raises:
        ValueError: On an empty or non-positive ``widths``, a non-positive ``in_features`` or
            ``num_classes``, ``dropout`` outside [0, 1), or ``residual=True`` with no two
            consecutive widths equal (the toggle would change nothing).
    """

    def __init__(
        self,
        *,
        in_features: int,
        num_classes: int = 2,
        widths: Sequence[int] = (64, 64, 64),
        batch_norm: bool = True,
        residual: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if not widths or min(widths) < 1:
            raise ValueError(f"widths must be a non-empty sequence of positive ints, got {widths}")
        for name, value in [("in_features", in_features), ("num_classes", num_classes)]:
            if value < 1:
                raise ValueError(f"{name} must be a positive int, got {value}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        sizes = [in_features, *widths]
        if residual and not any(a == b for a, b in zip(sizes, sizes[1:])):
            raise ValueError(
                f"residual=True needs a hidden layer whose input and output widths agree, but "
                f"in_features={in_features} and widths={tuple(widths)} have none; e.g. "
                f"widths={(widths[0], widths[0])}"
            )
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        for i, (a, b) in enumerate(zip(sizes, sizes[1:]), start=1):
            layer = LinearLayer(a, b, batch_norm=batch_norm)
            layers[f"layer{i}"] = Residual(layer) if residual and a == b else layer
        self.features = nn.Sequential(layers)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Linear(widths[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map rows ``[B, in_features]`` to logits ``[B, num_classes]``."""
        return self.classifier(self.dropout(self.features(x)))
