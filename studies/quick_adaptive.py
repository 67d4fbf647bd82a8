"""The quick study's question, answered decisively: which parts do not matter, at 1 point?

Hypothesis: as in ``studies/quick.py`` (the same network, data and training), but one component
changed at a time — adaptive max pooling vs max pooling included — with a smallest effect of
interest of 0.01 (one point of validation accuracy):
a change whose whole interval lies within ±0.01 is *negligible* (it does not matter), and seeds
are added only where the answer is still open — each variant starts with 3 seeds and gets one
more per round, up to 12, until its verdict is decided (group-sequential boundaries keep the
error rates at 5% over all looks). The report says how many seeds each variant needed and the
trials saved against giving every variant 12.

    ablate run studies/quick_adaptive.py
    ablate report studies/quick_adaptive.py
"""

from ablate import Study
from ablate.data import digits
from ablate.models import ConvNet

study = Study(
    "quick-adaptive",
    model=ConvNet,
    data=digits,
    config={
        "data.image_size": 16,
        "data.noise": 0.2,
        "model.widths": (8, 16, 32, 64),
        "data.batch_size": 64,
        "train.epochs": 8,
        "train.optimizer": "adam",
        "train.lr": 0.003,
        "train.weight_decay": 0.0,
        "train.schedule": "onecycle",
        "train.grad_clip": 1.0,
    },
    factors={
        "model.batch_norm": [True, False],
        "model.residual": [True, False],
        "model.kernel_size": [3, 5],
        "model.pool": ["adaptive_max", "max"],
    },
    design="one_at_a_time",
    seeds="adaptive",
    min_seeds=3,
    max_seeds=12,
    min_effect=0.01,
    metric="val_acc",
)
