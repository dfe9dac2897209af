"""The subcommands. Each ``register_*`` adds a parser; each ``cmd_*`` is a thin call into the library."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from resnet.cliargs import add_config_flags, config_overrides, max_pixels_flag, out_dir, positive_int
from resnet.config import (
    EVAL_DATA_FIELDS,
    SECTIONS,
    RunCfg,
    build_config,
    list_recipes,
    load_recipe,
    merge,
    read_run_config,
    to_dict,
)
from resnet.detection.cli import register_detect as register_detect_actions
from resnet.engine.runlock import check_new_run_dir, unique_run_dir
from resnet.errors import ConfigError, TrainingError
from resnet.launch import Launch, add_launch_flags, launch_from_args
from resnet.printable import printable_line
from resnet.transfer.cli import register_import, register_weights


# -- train ----------------------------------------------------------------------------------------------------
def register_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a network with a recipe (the main job)",
                       description="Train with a recipe; every recipe field can be overridden by its flag.")
    p.add_argument("--recipe", default=None, help=f"a shipped recipe ({', '.join(list_recipes(task='classify'))}) or "
                                                  "a .toml path (default quick)")
    p.add_argument("--out", default=None, help="run folder (default runs/<model>-<time>)")
    p.add_argument("--resume", default=None, metavar="DIR", help="continue the run in DIR from its newest checkpoint")
    p.add_argument("--print-config", action="store_true",
                   help="print the config this command would train with (recipe and flags applied) as TOML, and exit")
    add_config_flags(p, recipe="quick")
    add_launch_flags(p)
    p.set_defaults(handler=cmd_train)


DEFAULT_RECIPE = {"classify": "quick", "detect": "detect-quick"}
COMMAND = {"classify": "resnet train", "detect": "resnet detect train"}


def resolve_train_config(args: argparse.Namespace, task: str = "classify") -> RunCfg:
    """Recipe < flags; with --resume the run folder's config.toml replaces the recipe. One path for ``resnet train``
    (``task="classify"``) and ``resnet detect train`` (``"detect"``): a recipe or run of the other task is refused in
    one line naming the command that trains it."""
    flags = config_overrides(args)
    if args.resume:
        folder = Path(args.resume)
        if not (folder / "config.toml").is_file():
            raise ConfigError(f"--resume {args.resume}: no config.toml there; pass the folder of an earlier run")
        tables = read_run_config(folder)
        recipe = tables.pop("recipe")
        source = f"{folder} holds a {'detection' if 'detect' in tables else 'classification'} run"
    else:
        recipe = args.recipe or DEFAULT_RECIPE[task]
        tables = load_recipe(recipe)
        for section, values in tables.items():  # merge() below needs tables: say which line is not one
            if not isinstance(values, dict):
                raise ConfigError(f"recipe {recipe}: config section [{section}] must be a table of key = value "
                                  f"(got {section} = {values!r}); valid sections: {', '.join(SECTIONS)}")
        recipe = Path(recipe).stem
        source = f"recipe {recipe} is a {'detection' if 'detect' in tables else 'classification'} recipe"
    if ("detect" in tables) != (task == "detect"):
        other = "detect" if "detect" in tables else "classify"
        what = f"--resume {args.resume}" if args.resume else f"--recipe {args.recipe or recipe}"
        raise ConfigError(f"{source}; train it with: {COMMAND[other]} {what}")
    cfg = build_config(merge(tables, flags), recipe=recipe)
    from resnet.models.registry import check_model_cfg  # the registry knows the nets (it imports torch)

    check_model_cfg(cfg.model)
    return cfg


def cmd_train(args: argparse.Namespace) -> int:
    return train_command(args, "classify")


def cmd_detect_train(args: argparse.Namespace) -> int:
    return train_command(args, "detect")


def train_command(args: argparse.Namespace, task: str) -> int:
    """The one train command: resolve the config, choose the run folder, train (the engine takes the lock, checks
    what a resume changes, then writes), print the result."""
    if args.print_config:
        import tomli_w

        cfg = resolve_train_config(args, task)
        if task == "classify":  # what will train: the net an --init-from file holds, in its layout
            from resnet.classify import as_trained

            cfg = as_trained(cfg)

        print(tomli_w.dumps(to_dict(cfg)), end="")
        return 0
    launch = launch_from_args(args) if hasattr(args, "launcher") else None
    torchrun = int(os.environ.get("WORLD_SIZE", "1")) > 1  # every rank runs this; rank 0 owns the folder
    is_main = int(os.environ.get("RANK", "0")) == 0  # under torchrun only rank 0 prints
    if torchrun:  # what the run is, is rank 0's to read and check; its refusal ends every rank at once
        from resnet.engine.distributed import decided_by_rank0, join

        join()
        cfg, out = decided_by_rank0(lambda: _run_and_folder(args, task, torchrun, is_main, launch))
    else:
        cfg, out = _run_and_folder(args, task, torchrun, is_main, launch)

    def announce(trained: RunCfg) -> None:  # the config as trained (ResNet-110's warm-up rule applied)
        if is_main:
            print(config_summary(trained, out), flush=True)

    if launch is not None:
        announce(cfg)
        return train_as_job(cfg, out, launch)
    resume = bool(args.resume)
    if task == "detect":  # torch and the data stack: not for --help or --print-config
        from resnet.detection.runs import train_detector

        explicit_model = "name" in config_overrides(args).get("model", {})
        result = train_detector(cfg, out, resume, explicit_model, on_ready=announce)
    else:
        from resnet.classify import train

        result = train(cfg, out, resume=resume, on_ready=announce)
    if "stopped_by_signal" in result:
        if is_main:
            print(f"stopped by signal {result['stopped_by_signal']} at iteration {result['step']}; checkpoint "
                  f"written. Resume with: {COMMAND[task]} --resume {printable_line(str(out))}", flush=True)
        return 128 + int(result["stopped_by_signal"])
    if is_main:
        print("final:", json.dumps(result), flush=True)
        print(f"run folder: {printable_line(str(out))}")
    return 0


def _run_and_folder(args: argparse.Namespace, task: str, torchrun: bool, is_main: bool,
                    launch: Launch | None = None) -> tuple[RunCfg, Path]:
    """The config and the run folder, checked: a new run's folder is free, a resume's changes are allowed (refused
    before data and model are built; the engine checks again, under the lock); a folder a job was submitted for
    (``--launcher slurm``) is collected, not refused."""
    cfg = resolve_train_config(args, task)
    prefix = "detect-" if task == "detect" else ""
    if args.resume:
        out = Path(args.resume)
        if is_main:
            from resnet.engine.rundir import resume_changes

            resume_changes(out, cfg)
    elif args.out or torchrun:
        out = out_dir(args, f"{prefix}{cfg.model.name}-{time.strftime('%Y%m%d-%H%M%S')}")
        if is_main and not (launch is not None and submitted_before(out)):
            check_new_run_dir(out)  # never over another run, never over unrelated files
    else:  # runs/<model>-<time>, made unique (two runs started in one second never share a folder)
        out = unique_run_dir(out_dir(args, f"{prefix}{cfg.model.name}-{time.strftime('%Y%m%d-%H%M%S')}"))
    return cfg, out


def submitted_before(out: Path) -> bool:
    """Whether a job was submitted for the run folder ``out`` (``--launcher slurm``; recorded beside it)."""
    from resnet.launch.submit import read_jobs

    return out.name in read_jobs(out.parent)


def train_as_job(cfg: RunCfg, out: Path, launch: Launch) -> int:
    """``resnet train --launcher slurm``: the run as one job (the study's path, for a single run): wait and print
    its result, or with --no-wait return once it is submitted; the same command again collects it."""
    from resnet.launch.submit import JobRun, run_jobs

    if not (out / "final.json").is_file():
        failed = run_jobs([JobRun(out.name, cfg, out)], out.parent, launch, lambda msg: print(msg, flush=True),
                          study=False)
        if failed is None:
            print(f"run folder: {printable_line(str(out))}")
            return 0
        if failed:
            raise TrainingError(f"{out}: {failed[out.name]}")
    print("final:", json.dumps(json.loads((out / "final.json").read_text())), flush=True)
    print(f"run folder: {printable_line(str(out))}")
    return 0


def config_summary(cfg: RunCfg, out: Path) -> str:
    """A short readable block of what is being trained; the whole config is in the run folder's config.toml."""
    m, d, o, t = cfg.model, cfg.data, cfg.optim, cfg.train
    length = f"{t.epochs} epochs" if t.epochs is not None else f"{t.iterations} iterations"
    steps = (f"{', '.join(map(str, o.milestones_frac))} of the run" if o.milestones_frac is not None
             else ", ".join(map(str, o.milestones)))
    schedule = o.schedule if o.schedule != "step" else f"lr x{o.gamma} at {steps}"
    threads = f", {t.threads} threads" if t.threads is not None else ""
    lines = [f"config: recipe {printable_line(cfg.recipe)}; full config in {printable_line(str(out / 'config.toml'))}",
             f"  model   {m.name} (shortcut {m.shortcut or 'default'}, norm {m.norm}, init {m.init})"]
    if cfg.detect is None:
        lines.append(f"  data    {d.dataset}{f' from {d.data}' if d.data else ''}, val_split {d.val_split}")
    else:
        det = cfg.detect
        lines.append(f"  detect  Faster R-CNN {det.design}, {det.dataset}{f' from {det.data}' if det.data else ''}, "
                     f"images {det.min_size}-{det.max_size} px, backbone "
                     f"{det.init_from or 'from ' + (det.pretrain or 'scratch')}")
    optimizer = f"SGD lr {o.lr}, momentum {o.momentum}" if o.optimizer == "sgd" else f"{o.optimizer.upper()} lr {o.lr}"
    warmup = (f", warm-up lr {o.warmup_lr}" if o.warmup_lr is not None else
              f", linear warm-up over {o.linear_warmup_frac:g} of the run" if o.linear_warmup_frac else "")
    lines += [f"  optim   {optimizer}, weight decay {o.weight_decay}, {schedule}{warmup}",
              f"  train   {length}, batch {t.batch_size}, seed {t.seed}, device {t.device}, precision {t.precision}"
              + threads]
    modern = [text for text, on in (
        (f"label smoothing {t.label_smoothing:g}", t.label_smoothing), ("BCE loss", t.loss == "bce"),
        (f"MixUp {d.mixup_alpha:g}", d.mixup_alpha), (f"CutMix {d.cutmix_alpha:g}", d.cutmix_alpha),
        (d.auto_augment, d.auto_augment != "none"), (f"random erasing {d.random_erasing:g}", d.random_erasing),
        (f"repeated augmentation x{d.repeated_augment}", d.repeated_augment != 1),
        (f"stochastic depth {m.drop_path_rate:g}", m.drop_path_rate), (f"EMA {t.ema_decay:g}", t.ema_decay)) if on]
    if modern:  # the training refinements beyond the paper's recipe that this run uses
        lines.append(f"  modern  {', '.join(modern)}")
    return "\n".join(lines)


# -- eval / predict -------------------------------------------------------------------------------------------
def register_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="top-1/top-5 error of a run folder or weights file, or of an ensemble")
    p.add_argument("targets", nargs="+", metavar="RUN_OR_WEIGHTS",
                   help="run folder (uses its model.safetensors, and its dataset unless --dataset/--data say "
                        "otherwise), a .safetensors/.pth weights file or a published name such as "
                        "torchvision:resnet50.IMAGENET1K_V2 (default dataset: digits); several make an "
                        "ensemble (softmax scores averaged, the paper's Table 5)")
    p.add_argument("--arch", default=None, help="architecture, only for foreign weights whose depth matches no "
                                                "registered net (torchvision's and timm's are recognised)")
    p.add_argument("--split", choices=("test", "val"), default="test",
                   help="test (default) or the validation images a run held out (--val-split)")
    p.add_argument("--batch-size", type=positive_int, default=100, help="images per forward pass (default 100)")
    add_config_flags(p, sections=("data",), only=EVAL_DATA_FIELDS)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.set_defaults(handler=cmd_eval)


def eval_data_flags(run_data: dict[str, Any], flags: dict[str, Any]) -> dict[str, Any]:
    """A run folder's data settings under the command's flags: the run's dataset and views unless the flags name
    another dataset (then the run's settings are not that data's), and a ``--crop-size`` without ``--eval-resize``
    takes its own resize (as for a weights file), not the one the run kept for its crop."""
    if "dataset" in flags and flags["dataset"] != run_data.get("dataset"):
        return dict(flags)
    base = {k: v for k, v in run_data.items() if k in EVAL_DATA_FIELDS}
    if "crop_size" in flags and "eval_resize" not in flags:
        base.pop("eval_resize", None)
    return {**base, **flags}


def cmd_eval(args: argparse.Namespace) -> int:
    from resnet.inference import evaluate_ensemble

    flags = config_overrides(args).get("data", {})
    runs = [Path(t) for t in args.targets if (Path(t) / "config.toml").is_file()]
    if runs:  # a run folder: its dataset (and data settings) unless flags say otherwise
        flags = eval_data_flags(read_run_config(runs[0])["data"], flags)
    result = evaluate_ensemble(args.targets, flags, split=args.split, batch_size=args.batch_size,
                               device=args.device, arch=args.arch)
    for warning in result["warnings"]:
        print(f"warning: {warning}")
    members, final = result["members"], result["ensemble"]
    if len(members) > 1:
        width = max(len(f"{m['path']} ({m['arch']})") for m in members)
        print(f"{'model':<{width}}  {'top-1 error':>11}  {'top-5 error':>11}")
        for m in members:
            print(f"{m['path'] + ' (' + m['arch'] + ')':<{width}}  {m['top1_error']:10.2f}%  {m['top5_error']:10.2f}%")
        print(f"{f'ensemble of {len(members)}':<{width}}  {final['top1_error']:10.2f}%  {final['top5_error']:10.2f}%")
    skipped = f", {result['skipped']} unreadable skipped" if result.get("skipped") else ""
    what = f"ensemble of {len(members)}, " if len(members) > 1 else ""
    print(f"top-1 error: {final['top1_error']:.2f}%  top-5 error: {final['top5_error']:.2f}%  "
          f"({what}{result['count']} images{skipped}, protocol {result['protocol']})")
    return 0


def register_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="top-5 classes of images")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--weights", required=True, action="append",
                   help="a .safetensors written by resnet, a run folder, a torchvision/timm file or a published "
                        "name (resnet weights lists them); repeat it for an ensemble (softmax scores averaged)")
    p.add_argument("--arch", default=None, help="architecture, only for foreign weights whose depth matches no "
                                                "registered net (torchvision's and timm's are recognised)")
    p.add_argument("--top", type=positive_int, default=5, help="classes printed per image (default 5)")
    p.add_argument("--bad-images", choices=("fail", "skip"), default="fail",
                   help="an unreadable image: stop (fail, default) or warn and go on (skip)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    add_config_flags(p, sections=("data",), only=("max_pixels",))
    p.set_defaults(handler=cmd_predict)


def cmd_predict(args: argparse.Namespace) -> int:
    from resnet.inference import predict_images

    max_pixels = max_pixels_flag(args)
    for path, ranked in predict_images(args.weights, args.images, top=args.top, device=args.device, arch=args.arch,
                                       bad_images=args.bad_images, max_pixels=max_pixels):
        print(printable_line(str(path)))
        for rank, (label, prob) in enumerate(ranked, 1):
            print(f"  {rank}. {printable_line(str(label)):<20} {prob:.4f}")
    return 0


# -- summary / list / export ------------------------------------------------------------------------------------
def register_summary(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("summary", help="Table-1-style layout, parameters and multiply-adds")
    p.add_argument("name", nargs="?", help="architecture (resnet list shows them)")
    p.add_argument("--all", action="store_true", help="the whole zoo")
    p.add_argument("--input-size", type=positive_int, default=None, help="image side (default: the net's own)")
    p.add_argument("--stride-in-1x1", action=argparse.BooleanOptionalAction, default=None,
                   help="paper v1 (default) or torchvision v1.5 (--no-stride-in-1x1)")
    p.add_argument("--shortcut", default=None, help="A, B or C")
    p.set_defaults(handler=cmd_summary)


def cmd_summary(args: argparse.Namespace) -> int:
    from resnet.analysis.summary import format_summary, zoo_lines

    if args.all:  # streamed: a line per net as it is counted, not silence then the table
        for line in zoo_lines(input_size=args.input_size):
            print(line, flush=True)
        return 0
    if not args.name:
        raise ConfigError("resnet summary needs a model name or --all (resnet list shows the names)")
    opts = {k: v for k, v in (("stride_in_1x1", args.stride_in_1x1), ("shortcut", args.shortcut)) if v is not None}
    print(format_summary(args.name, input_size=args.input_size, **opts))
    return 0


def register_list(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="registered architectures and recipes")
    p.set_defaults(handler=cmd_list)


def cmd_list(args: argparse.Namespace) -> int:
    from resnet.config import list_recipes
    from resnet.models.registry import list_models

    print("models: " + " ".join(list_models()))
    print("recipes: " + " ".join(list_recipes()))
    return 0


def register_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export weights to ONNX (checked with ONNX Runtime), TorchScript or "
                                      "torch.export (.pt2), any batch and image size, preprocessing included")
    p.add_argument("--weights", required=True, help="a .safetensors written by resnet, a run folder, or a published "
                                                     "name (resnet weights lists them)")
    p.add_argument("--arch", default=None, help="architecture, only for foreign weights whose depth matches no "
                                                "registered net (torchvision's and timm's are recognised)")
    p.add_argument("--format", choices=("onnx", "torchscript", "pt2"), default="onnx")
    p.add_argument("--out", default=None, help="output file (default beside the weights)")
    p.add_argument("--input-size", type=positive_int, default=None, help="image side (default: the net's own)")
    p.set_defaults(handler=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from resnet.export import export_model

    report = export_model(args.weights, args.format, out=args.out, input_size=args.input_size, arch=args.arch)
    print(json.dumps(report))
    return 0


def register_experiment(sub: argparse._SubParsersAction) -> None:
    from resnet.experiments.cli import register

    register(sub)


def register_detect(sub: argparse._SubParsersAction) -> None:
    register_detect_actions(sub, train=cmd_detect_train)


def register_bench(sub: argparse._SubParsersAction) -> None:
    from resnet.bench import register

    register(sub)


REGISTRARS = [register_train, register_eval, register_predict, register_summary, register_list, register_export,
              register_experiment, register_bench, register_import, register_weights, register_detect]
