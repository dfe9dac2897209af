"""What ``resnet detect`` does: set up and train a detection run, score a detector, draw its boxes, write scenes.

A detection run folder is a run folder like any other (config.toml with its [detect] section, metrics.jsonl,
curves.png, TensorBoard, checkpoints/, model.safetensors, final.json, all written by the engine); ``resnet detect
train`` resolves its config and resumes it through the same command path as ``resnet train`` (``commands``). When
the backbone has no classification weights and the recipe names a ``pretrain`` recipe, that classification run is
trained first into ``RUN/pretrain`` through the same engine (and resumed there if it was interrupted).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any

from resnet.config import (
    DEFAULT_MAX_PIXELS,
    RunCfg,
    build_config,
    build_section,
    load_recipe,
    merge,
    section_values,
    to_dict,
)
from resnet.errors import ConfigError
from resnet.fsutil import write_atomic

log = logging.getLogger("resnet.detection")
PRETRAIN_DIR = "pretrain"


def pretrain_backbone(cfg: RunCfg, out: Path) -> tuple[RunCfg, dict[str, Any] | None]:
    """Without init weights and with a ``pretrain`` recipe: train the backbone as a classifier first, into
    RUN/pretrain (a finished one is reused, an interrupted one resumed). Returns the config initialising from it,
    and the classification run's result when it stopped on a signal (the caller stops too)."""
    detect = cfg.detect
    assert detect is not None, "a detection run's config has a [detect] section"
    if detect.init_from is not None or detect.pretrain is None:
        return cfg, None
    from resnet.classify import classification_task
    from resnet.engine.trainer import train

    folder = out / PRETRAIN_DIR
    if not (folder / "model.safetensors").is_file():
        model = {k: v for k, v in to_dict(cfg)["model"].items() if k != "num_classes"}
        recipe = load_recipe(detect.pretrain)
        schedule = {"device": cfg.train.device, "seed": cfg.train.seed}
        if detect.pretrain_iterations is not None:
            schedule["iterations"] = detect.pretrain_iterations
        overrides = {"model": model, "train": schedule}
        cls_cfg = build_config(merge(recipe, overrides), recipe=Path(detect.pretrain).stem)
        resume = (folder / "checkpoints").is_dir() and any((folder / "checkpoints").iterdir())
        log.info("no classification weights for the backbone: training %s with the %s recipe first, into %s",
                 cfg.model.name, detect.pretrain, folder)
        result = train(cls_cfg, folder, resume=resume, task=classification_task(cls_cfg))
        if "stopped_by_signal" in result:
            return cfg, result
        log.info("backbone pre-trained: test error %.2f%%", result.get("test_error", float("nan")))
    return dataclasses.replace(cfg, detect=dataclasses.replace(detect, init_from=str(folder))), None


def train_detector(cfg: RunCfg, out: Path, resume: bool, explicit_model: bool,
                   on_ready: Any = None) -> dict[str, Any]:
    """Pre-train if needed, fix the backbone and its input normalisation, train through the engine.

    A new run writes its config.toml first (rank 0), so that a run stopped while its backbone pre-trains resumes
    with the settings it started with; a resume writes nothing here: the engine takes the lock and checks what the
    resume changes before it writes config.toml.
    """
    from resnet.detection.backbones import resolve_init
    from resnet.detection.task import DetectionTask
    from resnet.engine.trainer import train

    if not resume and int(os.environ.get("RANK", "0")) == 0:
        from resnet.engine.rundir import write_config

        write_config(out, cfg)
    cfg, stopped = pretrain_backbone(cfg, out)
    if stopped is not None:
        return stopped
    assert cfg.detect is not None
    model, detect = resolve_init(cfg.model, cfg.detect, explicit_model)
    cfg = dataclasses.replace(cfg, model=model, detect=detect)
    return train(cfg, out, resume=resume, task=DetectionTask(detect), on_ready=on_ready)


def evaluate_detector(target: str, overrides: dict[str, Any], batch_size: int, device: str,
                      max_pixels: int | None = DEFAULT_MAX_PIXELS) -> tuple[dict[str, float], Path, int]:
    """(COCO and VOC07 figures, the COCO results JSON written beside the weights, images scored)."""
    import torch

    from resnet.detection.inference import load_detector, run_detector, weights_file
    from resnet.detection.loaders import DetectionEvalLoader
    from resnet.detection.metrics import evaluate_detections, write_coco_results
    from resnet.detection.task import open_test_source
    from resnet.detection.transforms import Resize
    from resnet.engine.distributed import resolve_device

    dev = resolve_device(device)
    model, cfg, categories = load_detector(target, dev)
    cfg = build_section("detect", {**section_values(cfg), **overrides})
    source = open_test_source(cfg, categories)
    loader = DetectionEvalLoader(source, batch_size, dev, resize=Resize(cfg.min_size, cfg.max_size),
                                 max_pixels=max_pixels)
    with torch.inference_mode():
        detections = run_detector(model, loader, dev)
    scores = evaluate_detections(source.records, categories, detections)
    split = cfg.test_split or "test"
    out = write_coco_results(weights_file(target).parent / f"detections-{cfg.dataset}-{split}.json", detections,
                             categories)
    return scores, out, len(detections)


def predict_files(weights: str, images: list[str], out: Path, min_score: float, device: str,
                  max_pixels: int | None = DEFAULT_MAX_PIXELS) -> list[dict[str, Any]]:
    """Detect objects in each image file; write IMAGE.png with the boxes drawn and detections.json into ``out``."""
    import torch
    from torchvision.io import write_png

    from resnet.data.imagefolder import decode_image_file
    from resnet.detection.inference import draw_detections, load_detector
    from resnet.engine.distributed import resolve_device

    drawn = _drawing_names(images, out)
    dev = resolve_device(device)
    model, _, categories = load_detector(weights, dev)
    names = [str(c["name"]) for c in categories]
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for path, target in zip(images, drawn, strict=True):
        image = decode_image_file(path, max_pixels)
        with torch.inference_mode():
            found = {k: v.cpu() for k, v in model([image.to(dev).float().div(255)])[0].items()}
        keep = found["scores"] >= min_score
        write_atomic(target, lambda tmp, found=found, image=image: write_png(
            draw_detections(image, found, names, min_score), str(tmp)))
        results.append({"file": str(path), "drawn": str(target),
                        "best_score": round(float(found["scores"].max()), 4) if len(found["scores"]) else None,
                        "detections": [
            {"label": names[int(c) - 1], "category_id": categories[int(c) - 1]["id"], "score": round(float(s), 4),
             "box_xyxy": [round(float(v), 2) for v in b]}
            for b, s, c in zip(found["boxes"][keep], found["scores"][keep], found["labels"][keep], strict=True)]})
    write_atomic(out / "detections.json", json.dumps(results, indent=1))
    return results


def _drawing_names(images: list[str], out: Path) -> list[Path]:
    """OUT/<stem>.png per image, made unique (two inputs named alike get -2, -3 ...); refused in one line when a
    drawing or detections.json would land on an input image or on a file that is not a drawing of this command."""
    inputs = {Path(p).resolve() for p in images}
    taken: set[Path] = set()
    drawn = []
    for path in images:
        stem, n = Path(path).stem, 1
        target = out / f"{stem}.png"
        while target in taken:
            n += 1
            target = out / f"{stem}-{n}.png"
        taken.add(target)
        drawn.append(target)
    for target in [*drawn, out / "detections.json"]:
        if target.resolve() in inputs:
            raise ConfigError(f"--out {out} would overwrite the input image {target}; pass another --out folder")
    listing = out / "detections.json"
    if listing.exists():
        raise ConfigError(f"{listing} already exists (an earlier prediction, or a file of yours); pass another --out "
                          "folder (the default is a new runs/detect-predict-<time>)")
    return drawn


def make_scenes_dataset(out: Path, train: int, test: int, size: int, seed: int) -> list[Path]:
    """The embedded scenes written as a COCO dataset (PNG images, instances_{train,test}.json)."""
    from resnet.detection.coco import write_coco
    from resnet.detection.scenes import make_scenes

    return [write_coco(make_scenes(split, count, seed, size), out, split)
            for split, count in (("train", train), ("test", test))]


__all__ = ["PRETRAIN_DIR", "evaluate_detector", "make_scenes_dataset", "predict_files", "pretrain_backbone",
           "train_detector"]
