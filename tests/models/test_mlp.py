import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ablate.models import MLP
from ablate.models.convnet import Residual

VARIANTS = [dict(batch_norm=bn, residual=res, dropout=p)
            for bn, res, p in itertools.product((True, False), (True, False), (0.0, 0.3))]


def count(net: nn.Module, cls: type[nn.Module]) -> int:
    return sum(isinstance(m, cls) for m in net.modules())


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(f"{k}={v[k]}" for k in v))
def test_every_level_of_every_toggle_builds_and_trains(variant):
    torch.manual_seed(0)
    net = MLP(in_features=5, num_classes=3, widths=(8, 8, 8), **variant)
    out = net(torch.randn(4, 5))
    assert out.shape == (4, 3)
    F.cross_entropy(out, torch.tensor([0, 1, 2, 0])).backward()
    assert all(p.grad is not None for p in net.parameters())
    assert count(net, nn.BatchNorm1d) == (3 if variant["batch_norm"] else 0)
    # residual: around the layers whose widths agree (8 -> 8 twice), never the first (5 -> 8)
    assert count(net, Residual) == (2 if variant["residual"] else 0)
    assert count(net, nn.Dropout) == (1 if variant["dropout"] else 0)


def test_a_residual_layer_adds_its_input_and_batch_norm_drops_the_bias():
    net = MLP(in_features=4, widths=(4,), num_classes=2).eval()
    layer = net.features.layer1
    x = torch.randn(3, 4)
    torch.testing.assert_close(layer(x), x + layer.f(x))
    assert layer.f[0].bias is None
    assert MLP(in_features=4, widths=(4,), batch_norm=False).features.layer1.f[0].bias is not None


@pytest.mark.parametrize("kwargs, words", [
    ({"widths": ()}, "widths must be"),
    ({"in_features": 0}, "in_features must be"),
    ({"dropout": 1.0}, "dropout must be"),
    ({"widths": (16, 8)}, "residual=True needs a hidden layer"),
])
def test_bad_settings_are_refused(kwargs, words):
    with pytest.raises(ValueError, match=words):
        MLP(**{"in_features": 4, **kwargs})
    assert MLP(in_features=4, widths=(16, 8), residual=False)  # no skip asked for: fine
