"""The quick study made fair: every variant gets its own learning-rate search.

Hypothesis: part of what the quick study blames on removing batch norm is the shared learning
rate (0.1 suits batch norm; a net without it needs a smaller one). Here each of the 16 variants
first gets the same search budget — 8 tuning trials of Optuna's TPE over the learning rate, 2
epochs each — and its 3 seeds are then trained with the best value found. If batch norm still
helps after tuning, the effect is the component's, not the learning rate's.

    ablate run studies/tuned.py
    ablate report studies/tuned.py
"""

from ablate import Study, Tuning
from ablate.data import digits
from ablate.models import ConvNet

study = Study(
    "tuned",
    model=ConvNet,
    data=digits,
    config={
        "model.widths": (8, 16, 32),
        "data.batch_size": 64,
        "data.image_size": 16,
        "data.noise": 0.3,
        "train.epochs": 3,
        "train.lr": 0.1,  # replaced by each variant's tuned value
        "train.schedule": "onecycle",
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
    tuning=Tuning(space={"train.lr": ("log", 1e-3, 0.3)}, trials=8, epochs=2),
)
