"""Datasets, the paper's transforms and the loaders the engine iterates.

The engine calls :func:`build_data` and gets a :class:`DataBundle`; everything else here is for the CLI
(``predict`` decodes one file with :func:`decode_image_file` and builds views with :func:`image_eval_views`)
and for tests. The evaluation-view contract is documented in :mod:`resnet.data.transforms`.
"""

from resnet.data.cifar import load_cifar
from resnet.data.digits import load_digits_split
from resnet.data.evaluation import EvalLoader
from resnet.data.imagefolder import BadImageLog, decode_image_file, scan_image_folder
from resnet.data.loaders import DataBundle, build_data, holdout
from resnet.data.streams import TrainStream
from resnet.data.transforms import (
    Normalizer,
    average_view_probs,
    batch_eval_views,
    image_eval_views,
    normalize,
    num_views,
    pixel_mean,
)

__all__ = [
    "BadImageLog",
    "DataBundle",
    "EvalLoader",
    "Normalizer",
    "TrainStream",
    "average_view_probs",
    "batch_eval_views",
    "build_data",
    "decode_image_file",
    "holdout",
    "image_eval_views",
    "load_cifar",
    "load_digits_split",
    "normalize",
    "num_views",
    "pixel_mean",
    "scan_image_folder",
]
