"""Detection as a task of the engine (:class:`resnet.engine.task.Task`): Faster R-CNN's loss, COCO mAP.

The loss is the sum of torchvision's loss dict (RPN objectness and box regression, detector classification and box
regression, Ren et al. 2015); its four terms are the running figures. Evaluation runs the detector on the test
split, gathers every process's detections, and scores them with COCOeval (the monitor is ``100 * (1 - mAP@.5)``,
lower is better, as the engine's plateau schedule expects).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from resnet.config import DetectCfg, RunCfg
from resnet.engine.distributed import DistInfo
from resnet.errors import ConfigError, DataError
from resnet.printable import safe_name

log = logging.getLogger("resnet.detection")
RUNNING = ("loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg")
MONITOR = "test_map50_error"
DEFAULT_SPLITS = {"scenes": ("train", "test"), "coco": ("train2017", "val2017"), "voc": ("trainval", "test")}


@dataclass
class DetectionData:
    """The data side of a detection run (:class:`resnet.engine.task.TaskData`)."""

    train: Any
    """:class:`resnet.detection.loaders.DetectionTrainStream`."""
    eval: Any
    """:class:`resnet.detection.loaders.DetectionEvalLoader` over the test split (this process's shard)."""
    test: None
    num_train: int
    bad_images: Any
    categories: list[dict[str, Any]]
    """``[{"id", "name"}]``: label ``i`` is ``categories[i - 1]``."""
    test_source: Any
    """The whole test split (:class:`resnet.detection.data.DetectionSource`): what the metrics score against."""
    dataset: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.categories)

    @property
    def classes(self) -> list[str]:
        return [str(c["name"]) for c in self.categories]


def _open(detect: DetectCfg, which: int, categories: list[dict[str, Any]] | None, bad_images: str) -> Any:
    from resnet.detection.sources import open_detection

    split = (detect.train_split, detect.test_split)[which] or DEFAULT_SPLITS[detect.dataset][which]
    if detect.dataset == "scenes":
        from resnet.detection.scenes import scenes_source

        return scenes_source(split, (detect.scenes_train, detect.scenes_test)[which], size=detect.scene_size)
    if not detect.data:
        raise ConfigError(f"--dataset {detect.dataset} needs --data PATH (the dataset folder)")
    return open_detection(detect.data, split, categories, bad_images=bad_images)


def open_train_source(detect: DetectCfg, bad_images: str = "fail") -> Any:
    """The training split of ``detect.dataset`` (:class:`resnet.detection.data.DetectionSource`)."""
    return _open(detect, 0, None, bad_images)


def open_test_source(detect: DetectCfg, categories: list[dict[str, Any]], bad_images: str = "fail") -> Any:
    """The test split, its categories numbered as the training split's (``categories``), cut to
    ``detect.eval_images``."""
    return first_images(_open(detect, 1, categories, bad_images), detect.eval_images)


def first_images(source: Any, count: int) -> Any:
    """The source cut to its first ``count`` images (0 = all): quicker evaluations during training."""
    if not count or count >= len(source):
        return source
    return replace(source, records=source.records[:count])


class DetectionTask:
    """Faster R-CNN training and COCO evaluation for :func:`resnet.engine.trainer.train`."""

    name = "detection"
    running = RUNNING
    monitor = MONITOR
    static_shapes = False  # images keep their own sizes: no CUDA-graph capture
    source = None  # the backbone's weights are recorded in config.toml ([detect] init_from) and the log

    def __init__(self, detect: DetectCfg) -> None:
        self.detect = detect
        self.init_note = ""
        """How the backbone was initialised (for the log and the reply), set by build_model."""
        self.cleaning: dict[str, dict[str, int]] = {}
        """What cleaning did to each split (:class:`resnet.detection.data.DetectionStats`), set by build_data."""

    # -- data and model ---------------------------------------------------------------------------------
    def build_data(self, cfg: RunCfg, device: torch.device, dist: DistInfo) -> DetectionData:
        from resnet.detection.loaders import DetectionEvalLoader, DetectionTrainStream
        from resnet.detection.transforms import Resize

        train = open_train_source(self.detect, cfg.data.bad_images)
        test = open_test_source(self.detect, train.categories, cfg.data.bad_images)
        self.cleaning = {"train": train.stats.as_dict(), "test": test.stats.as_dict()}
        for split in (train, test):  # said, and kept in final.json: what the data became before training
            level = logging.WARNING if split.stats.dropped else logging.INFO
            log.log(level, "%s split of %s: %s", split.split, safe_name(split.name), split.stats.describe())
        if train.stats.boxes == 0:
            raise DataError(f"{safe_name(train.name)} ({train.split} split): no box left to train on "
                            f"({train.stats.describe()}); check the annotations' coordinates (COCO: [x, y, width, "
                            "height] in pixels; VOC: 1-based pixel corners)")
        resize = Resize(self.detect.min_size, self.detect.max_size)
        stream = DetectionTrainStream(train, cfg.train.batch_size, device, cfg.train.seed, dist.rank,
                                      dist.world_size, resize=resize, flip=self.detect.flip,
                                      workers=cfg.data.workers, max_pixels=cfg.data.max_pixels)
        loader = DetectionEvalLoader(test, max(cfg.train.batch_size, dist.world_size), device, dist.rank,
                                     dist.world_size, resize=resize, workers=cfg.data.workers,
                                     max_pixels=cfg.data.max_pixels)
        return DetectionData(train=stream, eval=loader, test=None, num_train=len(train), bad_images=train.bad,
                             categories=list(train.categories), test_source=test, dataset=self.detect.dataset)

    def build_model(self, cfg: RunCfg, data: DetectionData) -> nn.Module:
        from resnet.detection.backbones import load_backbone
        from resnet.detection.models import build_detector

        net, self.init_note = load_backbone(cfg.model, self.detect)
        return build_detector(net, data.num_classes, self.detect)

    # -- training ---------------------------------------------------------------------------------------
    def batch_size(self, batch: Any) -> int:
        return len(batch[0])

    def loss(self, model: nn.Module, batch: Any) -> tuple[Tensor, Tensor]:
        """The sum of torchvision's four losses; the sums are each term times the images (per-image means later)."""
        images, targets = batch
        losses = model(images, targets)
        terms = torch.stack([losses[k].float() for k in RUNNING])
        return terms.sum(), terms.detach() * len(images)

    def train_figures(self, sums: dict[str, float], images: float) -> dict[str, float]:
        return {f"train_{k}": v / max(images, 1.0) for k, v in sums.items()}

    # -- evaluation -------------------------------------------------------------------------------------
    def evaluate(self, model: nn.Module, loader: Iterable[Any], device: torch.device, precision: str,
                 channels_last: bool) -> dict[str, float]:
        from resnet.detection.inference import run_detector
        from resnet.detection.metrics import evaluate_detections, gather_detections

        detections = gather_detections(run_detector(model, loader, device, precision))
        source = loader.source  # the whole split: the ground truth every process scores against
        scores = evaluate_detections(source.records, source.categories, detections)
        return {MONITOR: 100.0 * (1.0 - scores["coco_map50"]), **{f"test_{k}": v for k, v in scores.items()}}

    def save_record(self, data: DetectionData) -> tuple[dict[str, str], dict[str, Tensor]]:
        from resnet.config import section_values

        meta = {"task": self.name, "dataset": data.dataset, "classes": json.dumps(data.classes),
                "detect.categories": json.dumps(data.categories),
                "detect.config": json.dumps(section_values(self.detect), sort_keys=True)}
        return meta, {}

    # -- what the loop asks once -----------------------------------------------------------------------
    def as_trained(self, cfg: RunCfg, model: nn.Module) -> RunCfg:
        return cfg  # the backbone's layout was fixed before the run (backbones.resolve_init)

    def lr_scales(self, cfg: RunCfg, model: nn.Module) -> None:
        return None

    def write_results(self, out: Path, cfg: RunCfg, model: nn.Module, final: dict[str, Any],
                      history: list[dict[str, Any]], meta: dict[str, str], extra: dict[str, Tensor]) -> None:
        from resnet.engine.rundir import write_results

        final.setdefault("cleaning", self.cleaning)
        write_results(out, model, final, history, meta, extra, label=cfg.model.name)


__all__ = ["DEFAULT_SPLITS", "MONITOR", "RUNNING", "DetectionData", "DetectionTask", "first_images", "open_test_source",
           "open_train_source"]
