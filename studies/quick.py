"""Quick study: which parts of a small ResNet matter on handwritten digits?

Hypothesis: batch norm and residual connections rescue the same thing, a signal that survives
depth, so a net with either one trains as well as with both, but removing both costs accuracy;
and 5x5 instead of 3x3 kernels (2.8x the parameters) buy nothing on 16x16 digits. Data:
scikit-learn's bundled 8x8 digits upsampled to 16x16 (no download), with Gaussian pixel noise so
the task is not trivially easy. Every combination of the three toggles (full factorial, 8
variants) on 10 seeds: 80 short trials, about 2.5 minutes on 2 CPU cores. Ten seeds make the
intervals narrow enough that every verdict is far from its threshold, so the answer does not
change with the machine or the torch thread count. Your own images instead: swap the lines
marked below (they also rename the study, so its runs and report stay apart from these).

    ablate run studies/quick.py
    ablate report studies/quick.py
"""

from ablate import Study
from ablate.data import digits, image_folder  # noqa: F401 - image_folder: see the line below
from ablate.models import ConvNet

# The study's name (its MLflow experiment and reports/<name>/), data and data settings. Your own
# images (train/<class>/*.png|jpg and val/ or test/): use the two commented lines instead of the
# two after them, then try a small first run: ablate run studies/quick.py --seeds 2
# name, data = "my-images", image_folder
# data_settings = {"data.path": "/path/to/images", "data.image_size": 32}
name, data = "quick", digits
data_settings = {"data.image_size": 16, "data.noise": 0.2}  # noise: ~0.96, not 1

study = Study(
    name,
    model=ConvNet,
    data=data,
    config={
        **data_settings,
        "model.widths": (8, 16, 32, 64),  # stem width, then one stage of 3 convs per width
        "data.batch_size": 64,
        "train.epochs": 8,
        "train.optimizer": "adam",
        "train.lr": 0.003,
        "train.weight_decay": 0.0,
        "train.schedule": "onecycle",
        "train.grad_clip": 1.0,
        "train.cams": True,  # the report's class activation maps
    },
    factors={
        "model.batch_norm": [True, False],
        "model.residual": [True, False],
        "model.kernel_size": [3, 5],
    },
    design="full_factorial",
    seeds=10,
    metric="val_acc",
)
