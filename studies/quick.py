"""Quick study: which parts of a small ResNet matter on handwritten digits?

Hypothesis: with an adaptive optimiser (Adam) a small CNN trains well with or without batch norm
or residual connections alone, but removing both together costs accuracy (the two rescue the
same thing: a signal that survives depth), while 5x5 vs 3x3 kernels and adaptive max pooling vs
max pooling barely matter. Data: scikit-learn's bundled 8x8 digits upsampled to 16x16 (no
download), with Gaussian pixel noise so the task is not trivially easy. Every combination of
the four toggles (full factorial, 16 variants) on 3 seeds: 48 short trials on a CPU, about 3
minutes on 2 cores. Your own images instead: change the one line marked below.

    ablate run studies/quick.py
    ablate report studies/quick.py
"""

from ablate import Study
from ablate.data import digits, image_folder  # noqa: F401 - image_folder: see the line below
from ablate.models import ConvNet

# The data and its settings. Your own images (train/<class>/*.png|jpg and val/ or test/):
# data, data_settings = image_folder, {"data.path": "/path/to/images", "data.image_size": 32}
data, data_settings = digits, {"data.image_size": 16, "data.noise": 0.2}  # noise: ~0.96, not 1

study = Study(
    "quick",
    model=ConvNet,
    data=data,
    config={
        **data_settings,
        "model.widths": (8, 16, 32),  # stem width, then one stage per further width
        "data.batch_size": 64,
        "train.epochs": 8,
        "train.optimizer": "adam",
        "train.lr": 0.003,
        "train.weight_decay": 0.0,
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
