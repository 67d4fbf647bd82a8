import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ablate.models import ConvNet, get_global_pool, get_norm_layer
from ablate.models.layers import GlobalAvgPool2d, GlobalMaxPool2d

WIDTHS = (4, 8, 16)
POOLS = ("adaptive_max", "adaptive_avg", "max")
VARIANTS = [
    dict(batch_norm=bn, residual=res, preact=pre, kernel_size=k, pool=pool)
    for bn, res, pre, k, pool in itertools.product(
        (True, False), (True, False), (True, False), (3, 5), POOLS
    )
]
VARIANT_IDS = ["-".join(f"{k}={v}" for k, v in variant.items()) for variant in VARIANTS]


def small_net(**kwargs) -> ConvNet:
    return ConvNet(**{"widths": WIDTHS, "image_size": 16, **kwargs})


def count(net: nn.Module, cls: type[nn.Module]) -> int:
    return sum(isinstance(m, cls) for m in net.modules())


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
def test_every_variant_trains(variant):
    torch.manual_seed(0)
    net = small_net(num_classes=7, **variant)
    x = torch.randn(2, 3, 16, 16)
    feats = net.features(x)
    assert feats.shape == (2, WIDTHS[-1], 4, 4)  # two downsampling stages: 16 -> 4
    out = net(x)
    assert out.shape == (2, 7)
    torch.testing.assert_close(out, net.classifier(net.dropout(net.pool(net.features(x)))))
    F.cross_entropy(out, torch.tensor([1, 5])).backward()
    first_conv = next(m for m in net.modules() if isinstance(m, nn.Conv2d))
    assert first_conv is net.features.stem
    assert first_conv.weight.grad is not None and first_conv.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
def test_every_variant_builds_on_meta_device(variant):
    with torch.device("meta"):
        net = ConvNet(**variant)
    assert all(p.is_meta for p in net.parameters())
    assert net(torch.empty(2, 3, 32, 32, device="meta")).shape == (2, 10)


@pytest.mark.parametrize("batch_norm", [True, False])
def test_batch_norm_toggle(batch_norm):
    net = small_net(batch_norm=batch_norm)
    n_layers = 3 * (len(WIDTHS) - 1)  # down + two body layers per stage
    assert count(net, nn.BatchNorm2d) == (n_layers if batch_norm else 0)
    # The conv bias is only kept without batch norm (BN's shift makes it redundant).
    assert all(
        (m.bias is None) == batch_norm
        for m in net.features[1:].modules()
        if isinstance(m, nn.Conv2d)
    )


@pytest.mark.parametrize("pool", POOLS)
def test_pool_toggle(pool):
    net = small_net(pool=pool)
    n_stages = len(WIDTHS) - 1
    convs = [m for m in net.features[1:].modules() if isinstance(m, nn.Conv2d)]
    downs = [stage.down[0] for stage in list(net.features)[1:-1]]
    assert len(convs) == 3 * n_stages
    if pool == "max":
        assert count(net, nn.MaxPool2d) == n_stages
        assert all(conv.stride == (1, 1) for conv in convs)
        assert isinstance(net.pool, nn.Flatten)
        assert net.classifier.in_features == WIDTHS[-1] * (16 // 2**n_stages) ** 2
    else:
        assert count(net, nn.MaxPool2d) == 0
        assert [conv.stride for conv in downs] == [(2, 2)] * n_stages
        expected = GlobalMaxPool2d if pool == "adaptive_max" else GlobalAvgPool2d
        assert isinstance(net.pool, expected)
        assert net.classifier.in_features == WIDTHS[-1]
    assert not any(
        isinstance(m, (nn.AdaptiveMaxPool2d, nn.AdaptiveAvgPool2d)) for m in net.modules()
    )


def test_global_pools_match_adaptive_pools():
    x = torch.randn(2, 3, 5, 5)
    torch.testing.assert_close(GlobalMaxPool2d()(x), F.adaptive_max_pool2d(x, 1).flatten(1))
    torch.testing.assert_close(GlobalAvgPool2d()(x), F.adaptive_avg_pool2d(x, 1).flatten(1))


@pytest.mark.parametrize("kernel_size", [1, 3, 5, 7])
def test_kernel_size_reaches_body_convs(kernel_size):
    net = small_net(kernel_size=kernel_size, stem_kernel_size=3)
    assert net.features.stem.kernel_size == (3, 3)
    body = [m for m in net.features[1:].modules() if isinstance(m, nn.Conv2d)]
    assert body and all(m.kernel_size == (kernel_size, kernel_size) for m in body)
    assert all(m.padding == ((kernel_size - 1) // 2,) * 2 for m in body)
    assert net(torch.randn(1, 3, 16, 16)).shape == (1, 10)


@pytest.mark.parametrize("preact", [True, False])
@pytest.mark.parametrize("batch_norm", [True, False])
@pytest.mark.parametrize("residual", [True, False])
def test_residual_toggle_removes_the_skip(residual, batch_norm, preact):
    net = small_net(residual=residual, batch_norm=batch_norm, preact=preact).eval()
    layer = net.features.stage1.res1
    with torch.no_grad():  # make f(x) == 0: zero its conv and BN's affine parameters
        for m in layer.modules():
            if isinstance(m, (nn.Conv2d, nn.BatchNorm2d)):
                for p in m.parameters():
                    p.zero_()
        x = torch.randn(2, WIDTHS[1], 8, 8)
        y = layer(x)
    assert torch.equal(y, x) == residual
    if not residual:
        assert torch.equal(y, torch.zeros_like(x))


@pytest.mark.parametrize("pool", POOLS)
@pytest.mark.parametrize("preact", [True, False])
def test_residual_toggle_keeps_parameter_count(preact, pool):
    def n_params(residual: bool) -> int:
        return sum(
            p.numel() for p in small_net(residual=residual, preact=preact, pool=pool).parameters()
        )

    assert n_params(True) == n_params(False)


def test_preact_ordering():
    post = small_net().features.stage1.res1.f
    pre = small_net(preact=True).features.stage1.res1.f
    assert [type(m) for m in post] == [nn.Conv2d, nn.ReLU, nn.BatchNorm2d]
    assert [type(m) for m in pre] == [nn.BatchNorm2d, nn.ReLU, nn.Conv2d]


@pytest.mark.parametrize("dropout", [0.0, 0.5])
def test_dropout_toggle(dropout):
    net = small_net(dropout=dropout)
    assert count(net, nn.Dropout) == (1 if dropout else 0)
    assert isinstance(net.dropout, nn.Dropout if dropout else nn.Identity)


@pytest.mark.parametrize("pool", POOLS)
def test_channels_last_input(pool):
    torch.manual_seed(0)
    net = small_net(pool=pool).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        expected = net(x)
        net = net.to(memory_format=torch.channels_last)
        actual = net(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(actual, expected)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(kernel_size=4), r"kernel_size must be an odd integer >= 1 \(e.g. 3 or 5\), got 4"),
        (dict(kernel_size=0), "kernel_size must be an odd"),
        (dict(stem_kernel_size=2), "stem_kernel_size must be an odd"),
        (
            dict(pool="avg"),
            "unknown pool 'avg'; valid choices: 'adaptive_max', 'adaptive_avg', 'max'",
        ),
        (dict(pool="max", image_size=3), "image_size must be at least 4"),
        (dict(widths=()), "widths"),
        (dict(num_classes=0), "num_classes"),
        (dict(dropout=1.0), r"dropout must be in \[0, 1\)"),
    ],
)
def test_invalid_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        small_net(**kwargs)


def test_pool_max_minimum_image_size_is_accepted():
    net = small_net(pool="max", image_size=4)
    assert net(torch.randn(2, 3, 4, 4)).shape == (2, 10)
    assert net.classifier.in_features == WIDTHS[-1]


def test_resolvers():
    assert get_norm_layer("batchnorm") is nn.BatchNorm2d
    assert isinstance(get_norm_layer("none")(8), nn.Identity)
    assert get_norm_layer(nn.GroupNorm) is nn.GroupNorm
    assert get_global_pool("ADAPTIVE_AVG") is GlobalAvgPool2d
    with pytest.raises(
        ValueError, match="unknown norm 'layer'; valid choices: 'batchnorm', 'none'"
    ):
        get_norm_layer("layer")
    with pytest.raises(ValueError, match="valid choices: 'adaptive_max', 'adaptive_avg'"):
        get_global_pool("max")
    with pytest.raises(TypeError, match="pool must be a name, a class or a callable"):
        get_global_pool(3)
