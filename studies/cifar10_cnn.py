"""CIFAR-10: which parts of fast.ai's lesson-7 ResNet matter?

Hypothesis (the lesson's claims, tested one component at a time): batch norm and residual
connections each help a lot; a 5x5 body kernel is no better than 3x3 for its extra cost; and
downsampling with stride-2 convs then adaptive max pooling at the end beats max-pooling layers
that flatten into the classifier.

Baseline: the lesson's ``Resnet([10, 16, 32, 64, 128], 10)`` — a 5x5 stem conv, then per stage a
stride-2 conv layer and two residual layers, batch norm after each conv, adaptive max pooling at
the end — trained with SGD (momentum 0.9, weight decay 1e-4) on an SGDR schedule (cycles of 1, 2
and 4 epochs), batch 256, random crop + flip. One-at-a-time design, 3 seeds: 5 variants x 3 = 15
trials.

Meant for a GPU; the data is downloaded by torchvision on first use (``data.download=True``).
Cost, measured on CPU-shaped data by ``python tests/benchmarks/bench_overhead.py`` (the
CIFAR-shaped ResNet row): see README "Performance"; a GPU run has not been measured yet.

    ablate run studies/cifar10_cnn.py
    ablate report studies/cifar10_cnn.py
"""

from ablate import Study
from ablate.data import cifar10
from ablate.models import ConvNet

study = Study(
    "cifar10-cnn",
    model=ConvNet,
    data=cifar10,
    config={
        "model.widths": (10, 16, 32, 64, 128),  # the lesson's Resnet
        "data.batch_size": 256,
        "data.augment": True,  # random crop (pad 4) + horizontal flip, on the device
        "train.epochs": 7,  # SGDR cycles of 1 + 2 + 4 epochs
        "train.lr": 0.1,
        "train.weight_decay": 1e-4,
        "train.schedule": "sgdr",
        "train.cycle_len": 1,
        "train.cycle_mult": 2,
        "train.cams": True,  # the report's class activation maps
    },
    factors={
        "model.batch_norm": [True, False],
        "model.residual": [True, False],
        "model.kernel_size": [3, 5],
        "model.pool": ["adaptive_max", "max"],
    },
    design="one_at_a_time",
    seeds=3,
    metric="val_acc",
)
