"""Device-resident datasets: image classification (``ImageData``), other classification inputs
(``ArrayData``) and character LM (``TextData``). Each is what the built-in loop needs of a data
object (:class:`ablate.protocols.Data`); the two classification ones share
``ClassificationData``.

Factories take the study's ``data.*`` settings as keyword arguments: ``digits``, ``cifar10``,
``image_folder`` (a folder per class), ``text`` (a file, or a corpus by name); ``from_arrays``
wraps arrays a study's own data function has loaded. torchvision and scikit-learn are imported
only inside the factories that use them.
"""

from ablate.data.arrays import ArrayData, from_arrays
from ablate.data.cache import ChecksumError
from ablate.data.corpus import TextData, text
from ablate.data.folder import ImageFolderError, image_folder
from ablate.data.images import ClassificationData, ImageData, cifar10, digits

__all__ = [
    "ArrayData",
    "ChecksumError",
    "ClassificationData",
    "ImageData",
    "ImageFolderError",
    "TextData",
    "cifar10",
    "digits",
    "from_arrays",
    "image_folder",
    "text",
]
