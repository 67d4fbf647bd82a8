"""Device-resident datasets: image classification (``ImageData``) and character LM (``TextData``).

Factories take the study's ``data.*`` settings as keyword arguments. torchvision and scikit-learn
are imported only inside ``cifar10`` and ``digits``.
"""

from ablate.data.corpus import TextData, text
from ablate.data.images import ImageData, cifar10, digits

__all__ = ["ImageData", "TextData", "cifar10", "digits", "text"]
