"""``resnet detect train|eval|predict|make-scenes``: Faster R-CNN on our nets (the paper's Sec. 4.3).

Only declares the commands (the CLI imports every command at start, so nothing heavy is imported here); the work
is in :mod:`resnet.detection.runs`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from resnet.cliargs import add_config_flags, config_overrides, out_dir, positive_int, timestamp
from resnet.detection.options import DetectCfg
from resnet.engine.runlock import check_new_run_dir, unique_run_dir

EXAMPLES = """examples:
  resnet detect train                                    the detect-quick recipe: ResNet-20 on the embedded scenes
  resnet detect train --recipe detect-paper --dataset coco --data ~/coco --init-from runs/resnet101-...
  resnet detect train --resume runs/detect-resnet20-...  continue a run from its newest checkpoint
  resnet detect eval runs/detect-resnet20-...            COCO mAP (and VOC07 mAP) on the test split
  resnet detect predict scene.png --weights runs/detect-resnet20-...
  resnet detect make-scenes scenes/                      the embedded scenes as a COCO dataset on disk"""
_DATA_FIELDS = ("dataset", "data", "test_split", "scenes_test", "scene_size", "eval_images", "score_thresh")


def _detect_flags(p: argparse.ArgumentParser, names: tuple[str, ...] | None = None) -> None:
    """One flag per DetectCfg field (``--design``, ``--init-from``, ...), its help the field's."""
    group = p.add_argument_group("[detect] options")
    for f in dataclasses.fields(DetectCfg):
        if names is not None and f.name not in names:
            continue
        flag, dest, help_ = "--" + f.name.replace("_", "-"), f"det__{f.name}", f.metadata["help"].replace("%", "%%")
        if f.type == "bool":
            group.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, default=None, help=help_)
        else:
            group.add_argument(flag, dest=dest, default=None, metavar="VALUE", help=help_)


def _detect_overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {k[len("det__"):]: v for k, v in vars(args).items() if k.startswith("det__") and v is not None}


def _parser(sub: argparse._SubParsersAction, name: str, help_: str, handler: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help_, description=help_)
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    p.set_defaults(handler=handler)
    return p


def register_detect(sub: argparse._SubParsersAction) -> None:
    """Add the ``detect`` subcommand and its actions."""
    p = sub.add_parser("detect", help="object detection: Faster R-CNN with our nets as backbones (Sec. 4.3)",
                       description="Faster R-CNN with our nets as backbones (the paper's Sec. 4.3).", epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = p.add_subparsers(dest="detect_action", metavar="ACTION")
    actions.required = True

    t = _parser(actions, "train", "train a detector with a recipe (default detect-quick)", cmd_train)
    t.add_argument("--recipe", default=None, help="detect-quick, detect-paper or a .toml path")
    t.add_argument("--out", default=None, help="run folder (default runs/detect-<backbone>-<time>)")
    t.add_argument("--resume", default=None, metavar="DIR", help="continue the run in DIR from its newest checkpoint")
    t.add_argument("--workers", dest="cfg__data__workers", default=None, metavar="INT",
                   help="loader worker processes (default 2)")
    t.add_argument("--bad-images", dest="cfg__data__bad_images", default=None, choices=("fail", "skip"),
                   help="an unreadable image: stop with its path (fail) or log it and go on (skip)")
    add_config_flags(t, sections=("model", "optim", "train"))
    _detect_flags(t)

    e = _parser(actions, "eval", "COCO mAP and VOC07 mAP of a detector on a test split", cmd_eval)
    e.add_argument("target", help="a detection run folder or its model.safetensors")
    e.add_argument("--batch-size", type=positive_int, default=8, help="images per forward pass (default 8)")
    e.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    _detect_flags(e, _DATA_FIELDS)

    r = _parser(actions, "predict", "draw a detector's boxes on images", cmd_predict)
    r.add_argument("images", nargs="+", help="image files")
    r.add_argument("--weights", required=True, help="a detection run folder or its model.safetensors")
    r.add_argument("--out", default=None, help="folder for the drawn images and detections.json "
                                               "(default runs/detect-predict-<time>)")
    r.add_argument("--min-score", type=float, default=0.5, help="boxes scoring at least this are kept (0.5)")
    r.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))

    m = _parser(actions, "make-scenes", "write the embedded digit scenes as a COCO dataset", cmd_make_scenes)
    m.add_argument("out", help="folder to write (train/, test/, instances_train.json, instances_test.json)")
    m.add_argument("--train", type=positive_int, default=4000, help="training scenes (default 4000)")
    m.add_argument("--test", type=positive_int, default=500, help="test scenes (default 500)")
    m.add_argument("--size", type=positive_int, default=128, help="scene side in pixels (default 128)")
    m.add_argument("--seed", type=int, default=0, help="scene seed (default 0, the one the recipes train on)")


def cmd_train(args: argparse.Namespace) -> int:
    from resnet.config import to_dict
    from resnet.detection.runs import resolve_config, train_detector

    flags = config_overrides(args)
    resume = Path(args.resume) if args.resume else None
    cfg, detect = resolve_config(args.recipe, resume, flags, _detect_overrides(args))
    is_main = int(os.environ.get("RANK", "0")) == 0
    if resume is not None:
        out = resume
    elif args.out or "RANK" in os.environ:  # torchrun: every rank must name the same folder
        out = out_dir(args, f"detect-{cfg.model.name}-{timestamp()}")
        if is_main:
            check_new_run_dir(out)  # never over another run, never over unrelated files
    else:
        out = unique_run_dir(out_dir(args, f"detect-{cfg.model.name}-{timestamp()}"))

    def announce(trained: Any) -> None:
        if is_main:
            print("config:", json.dumps(to_dict(trained)), flush=True)

    result = train_detector(cfg, detect, out, resume is not None, "name" in flags.get("model", {}), announce)
    if "stopped_by_signal" in result:
        if is_main:
            print(f"stopped by signal {result['stopped_by_signal']} at iteration {result['step']}; checkpoint "
                  f"written. Resume with: resnet detect train --resume {out}", flush=True)
        return 128 + int(result["stopped_by_signal"])
    if is_main:
        print("final:", json.dumps(result), flush=True)
        print(f"run folder: {out}")
    return 0


_TABLE = (("coco_map", "mAP@[.5:.95]"), ("coco_map50", "mAP@.5"), ("coco_map75", "mAP@.75"),
          ("coco_map_small", "mAP small"), ("coco_map_medium", "mAP medium"), ("coco_map_large", "mAP large"),
          ("voc07_map", "VOC07 mAP@.5 (11-point)"))


def cmd_eval(args: argparse.Namespace) -> int:
    from resnet.detection.runs import evaluate_detector

    scores, written, count = evaluate_detector(args.target, _detect_overrides(args), args.batch_size, args.device)
    print(f"{'metric':<26}value")
    for key, label in _TABLE:
        value = scores.get(key, float("nan"))
        print(f"{label:<26}{'n/a (no such objects)' if value < 0 else f'{value:.4f}'}")
    print(f"{count} images; detections (COCO results format): {written}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from resnet.detection.runs import predict_files

    out = out_dir(args, f"detect-predict-{timestamp()}")
    for item in predict_files(args.weights, args.images, out, args.min_score, args.device):
        print(f"{item['file']}: {len(item['detections'])} object(s) -> {item['drawn']}")
        for det in item["detections"]:
            print(f"  {det['label']:<12} {det['score']:.3f}  {det['box_xyxy']}")
    print(f"detections: {out / 'detections.json'}")
    return 0


def cmd_make_scenes(args: argparse.Namespace) -> int:
    from resnet.detection.runs import make_scenes_dataset

    for path in make_scenes_dataset(Path(args.out), args.train, args.test, args.size, args.seed):
        print(f"wrote {path}")
    print(f"train on it: resnet detect train --dataset coco --data {args.out} --train-split train --test-split test")
    return 0


__all__ = ["cmd_eval", "cmd_make_scenes", "cmd_predict", "cmd_train", "register_detect"]
