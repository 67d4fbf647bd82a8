"""Quick study: which parts of a small ResNet matter on handwritten digits?

Hypothesis: batch norm and residual connections help a small CNN trained briefly with a
fairly high learning rate; 5x5 vs 3x3 kernels and adaptive max pooling vs max pooling matter
less. Data: scikit-learn's bundled 8x8 digits upsampled to 16x16 (no download), with noise so
the task is not trivially easy. Every combination of the four toggles (full factorial, 16
variants) on 3 seeds: 48 short trials on a CPU.

    ablate run studies/quick.py
    ablate report studies/quick.py
"""

from ablate import Study
from ablate.data import digits
from ablate.models import ConvNet

study = Study(
    "quick",
    model=ConvNet,
    data=digits,
    config={
        "model.widths": (8, 16, 32),  # stem width, then one stage per further width
        "data.batch_size": 64,
        "data.image_size": 16,
        "data.noise": 0.3,  # Gaussian pixel noise: makes the variants differ
        "train.epochs": 3,
        "train.lr": 0.1,
        "train.schedule": "onecycle",
        "train.keep_weights": True,  # for the report's class activation maps
    },
    factors={
        "model.batch_norm": [True, False],
        "model.residual": [True, False],
        "model.kernel_size": [3, 5],
        "model.pool": ["adaptive_max", "max"],
    },
    design="full_factorial",
    seeds=3,
    metric="val_acc",
)
