"""``resnet detect train|eval|predict|make-scenes``: Faster R-CNN on our nets (the paper's Sec. 4.3).

Only declares the commands (the CLI imports every command at start, so nothing heavy is imported here); the work
is in :mod:`resnet.detection.runs`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from resnet.cliargs import add_config_flags, config_overrides, max_pixels_flag, out_dir, positive_int, timestamp
from resnet.config import list_recipes
from resnet.printable import printable_line

EXAMPLES = """examples:
  resnet detect train                                    the detect-quick recipe: ResNet-20 on the embedded scenes
  resnet detect train --recipe detect-paper --dataset coco --data ~/coco --init-from runs/resnet101-...
  resnet detect train --resume runs/detect-resnet20-...  continue a run from its newest checkpoint
  resnet detect eval runs/detect-resnet20-...            COCO mAP (and VOC07 mAP) on the test split
  resnet detect predict scene.png --weights runs/detect-resnet20-...
  resnet detect make-scenes scenes/                      the embedded scenes as a COCO dataset on disk"""
_DATA_FIELDS = ("dataset", "data", "test_split", "scenes_test", "scene_size", "eval_images", "score_thresh")


def _parser(sub: argparse._SubParsersAction, name: str, help_: str, handler: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help_, description=help_)
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    p.set_defaults(handler=handler)
    return p


def register_detect(sub: argparse._SubParsersAction, train: Any) -> None:
    """Add the ``detect`` subcommand and its actions; ``train`` is the one train command (``commands``), which
    ``resnet train`` shares."""
    p = sub.add_parser("detect", help="object detection: Faster R-CNN with our nets as backbones (Sec. 4.3)",
                       description="Faster R-CNN with our nets as backbones (the paper's Sec. 4.3).", epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = p.add_subparsers(dest="detect_action", metavar="ACTION")
    actions.required = True

    t = _parser(actions, "train", "train a detector with a recipe (default detect-quick)", train)
    t.add_argument("--recipe", default=None, help=f"a shipped recipe ({', '.join(list_recipes(task='detect'))}) or a "
                                                  ".toml path (default detect-quick)")
    t.add_argument("--out", default=None, help="run folder (default runs/detect-<backbone>-<time>)")
    t.add_argument("--resume", default=None, metavar="DIR", help="continue the run in DIR from its newest checkpoint")
    t.add_argument("--print-config", action="store_true",
                   help="print the config this command would train with (recipe and flags applied) as TOML, and exit")
    add_config_flags(t, sections=("model", "optim", "train", "detect"), recipe="detect-quick")
    add_config_flags(t, sections=("data",), only=("workers", "bad_images", "max_pixels"))  # [detect]: which images

    e = _parser(actions, "eval", "COCO mAP and VOC07 mAP of a detector on a test split", cmd_eval)
    e.add_argument("target", help="a detection run folder or its model.safetensors")
    e.add_argument("--batch-size", type=positive_int, default=8, help="images per forward pass (default 8)")
    e.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    add_config_flags(e, sections=("detect",), only=_DATA_FIELDS)
    add_config_flags(e, sections=("data",), only=("max_pixels",))

    r = _parser(actions, "predict", "draw a detector's boxes on images", cmd_predict)
    r.add_argument("images", nargs="+", help="image files")
    r.add_argument("--weights", required=True, help="a detection run folder or its model.safetensors")
    r.add_argument("--out", default=None, help="folder for the drawn images and detections.json "
                                               "(default runs/detect-predict-<time>)")
    r.add_argument("--min-score", type=float, default=0.5, help="boxes scoring at least this are kept (0.5)")
    r.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    add_config_flags(r, sections=("data",), only=("max_pixels",))

    m = _parser(actions, "make-scenes", "write the embedded digit scenes as a COCO dataset", cmd_make_scenes)
    m.add_argument("out", help="folder to write (train/, test/, instances_train.json, instances_test.json)")
    m.add_argument("--train", type=positive_int, default=4000, help="training scenes (default 4000)")
    m.add_argument("--test", type=positive_int, default=500, help="test scenes (default 500)")
    m.add_argument("--size", type=positive_int, default=128, help="scene side in pixels (default 128)")
    m.add_argument("--seed", type=int, default=0, help="scene seed (default 0, the one the recipes train on)")


_TABLE = (("coco_map", "mAP@[.5:.95]"), ("coco_map50", "mAP@.5"), ("coco_map75", "mAP@.75"),
          ("coco_map_small", "mAP small"), ("coco_map_medium", "mAP medium"), ("coco_map_large", "mAP large"),
          ("voc07_map", "VOC07 mAP@.5 (11-point)"))


def cmd_eval(args: argparse.Namespace) -> int:
    from resnet.detection.runs import evaluate_detector

    flags = config_overrides(args)
    scores, written, count = evaluate_detector(args.target, flags.get("detect", {}), args.batch_size, args.device,
                                               max_pixels=max_pixels_flag(args))
    print(f"{'metric':<26}value")
    for key, label in _TABLE:
        value = scores.get(key, float("nan"))
        print(f"{label:<26}{'n/a (no such objects)' if value < 0 else f'{value:.4f}'}")
    print(f"{count} images; detections (COCO results format): {written}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from resnet.detection.runs import predict_files

    out = out_dir(args, f"detect-predict-{timestamp()}")
    for item in predict_files(args.weights, args.images, out, args.min_score, args.device,
                              max_pixels=max_pixels_flag(args)):
        best = item["best_score"]
        none = "" if item["detections"] else (
            f" (no box scored --min-score {args.min_score}; the best scored {best:.3f}: lower --min-score to see it)"
            if best is not None else " (the detector proposed no box)")
        print(f"{printable_line(item['file'])}: {len(item['detections'])} object(s){none} -> "
              f"{printable_line(item['drawn'])}")
        for det in item["detections"]:
            print(f"  {printable_line(det['label']):<12} {det['score']:.3f}  {det['box_xyxy']}")
    print(f"detections: {out / 'detections.json'}")
    return 0


def cmd_make_scenes(args: argparse.Namespace) -> int:
    from resnet.detection.runs import make_scenes_dataset

    for path in make_scenes_dataset(Path(args.out), args.train, args.test, args.size, args.seed):
        print(f"wrote {path}")
    print(f"train on it: resnet detect train --dataset coco --data {args.out} --train-split train --test-split test")
    return 0


__all__ = ["cmd_eval", "cmd_make_scenes", "cmd_predict", "register_detect"]
