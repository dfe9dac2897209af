"""argparse building blocks shared by every subcommand: config flags, value types, the run-folder default.

A leaf module: the command modules import it, it imports none of them (``cli`` -> ``commands`` -> ``cliargs``).
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import time
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

from resnet.config import OPTIONAL_SECTIONS, SECTIONS, field_help, load_recipe

CLASSIFY_SECTIONS = tuple(s for s in SECTIONS if s not in OPTIONAL_SECTIONS)

_FLAG_NAMES = {("model", "name"): "--model"}  # every other field's flag is its name with dashes
_METAVARS = {"int": "INT", "float": "FLOAT", "str": "NAME", "tuple": "LIST"}


def flag_name(section: str, name: str) -> str:
    """The command-line flag of a config field (``optim.weight_decay`` -> ``--weight-decay``)."""
    return _FLAG_NAMES.get((section, name), "--" + name.replace("_", "-"))


def _metavar(f: dataclasses.Field) -> str:
    """INT, FLOAT, NAME, LIST or PATH from the field's declared type (a string annotation)."""
    if f.name in ("data", "root"):
        return "PATH"
    base = re.split(r"[\[ |]", str(f.type), maxsplit=1)[0]
    return _METAVARS.get(base, "VALUE")


def _shown(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return ",".join(map(str, value)) or "none"
    return "unset" if value is None else str(value)


def _default_text(f: dataclasses.Field, recipe: tuple[str, dict[str, Any]] | None, section: str) -> str:
    """The value the command uses without the flag: its recipe's (when the recipe sets it), else the built-in."""
    if recipe is not None:
        name, values = recipe
        if f.name in values.get(section, {}):
            built_in = "" if f.default is dataclasses.MISSING else f"; built-in {_shown(f.default)}"
            return f" (default: {_shown(values[section][f.name])}, the {name} recipe's{built_in})"
    if f.default is dataclasses.MISSING:
        return ""
    return f" (default: {_shown(f.default)})"


def add_config_flags(p: argparse.ArgumentParser, sections: Sequence[str] = tuple(CLASSIFY_SECTIONS),
                     only: Collection[str] | None = None, recipe: str | None = None) -> None:
    """One flag per config field of ``sections`` (``only`` those fields, when given), its help the field's own
    (``config.field_help``); values are checked by the config. Each help ends with the value used without the flag:
    ``recipe``'s (the command's default recipe) where it sets one, else the built-in (``--print-config`` shows the
    values a run would use)."""
    defaults = (recipe, load_recipe(recipe)) if recipe else None
    for section in sections:
        group = p.add_argument_group(f"[{section}] options")
        for f in dataclasses.fields(SECTIONS[section]):
            if only is not None and f.name not in only:
                continue
            dest = f"cfg__{section}__{f.name}"
            help_ = (field_help(section, f.name) + _default_text(f, defaults, section)).replace("%", "%%")
            flag = flag_name(section, f.name)
            if f.type in ("bool", "bool | None") and f.name.startswith("no_"):  # not --no-no-decay-norm-bias
                group.add_argument(flag, dest=dest, action="store_const", const=True, default=None, help=help_)
                group.add_argument("--" + flag[len("--no-"):], dest=dest, action="store_const", const=False,
                                   help=f"the opposite of {flag}")
            elif f.type in ("bool", "bool | None"):
                group.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, default=None, help=help_)
            else:
                group.add_argument(flag, dest=dest, default=None, metavar=_metavar(f), help=help_)


def config_overrides(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The flags the user actually gave, as nested overrides. ``--iterations`` without ``--epochs`` sets the length
    in iterations: a recipe's (or a resumed run's) ``epochs`` would otherwise override it unseen."""
    out: dict[str, dict[str, Any]] = {}
    for key, value in vars(args).items():
        if key.startswith("cfg__") and value is not None:
            _, section, name = key.split("__", 2)
            out.setdefault(section, {})[name] = value
    train = out.get("train", {})
    if "iterations" in train and "epochs" not in train and hasattr(args, "cfg__train__epochs"):
        train["epochs"] = "none"
    return out


def max_pixels_flag(args: argparse.Namespace) -> int:
    """``--max-pixels`` of a command that reads image files outside a run's config (predict, detect eval/predict),
    checked as the config checks it."""
    from resnet.config import build_section

    return build_section("data", config_overrides(args).get("data", {})).max_pixels


def positive_int(text: str) -> int:
    """argparse ``type=`` for counts and sizes: a bad value is argparse's one error line, not a traceback later."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be >= 1")
    return value


def width_by_height(text: str) -> tuple[int, int]:
    """argparse ``type=`` for image sizes written ``WxH`` (e.g. 500x375)."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"{text!r} is not WIDTHxHEIGHT, e.g. 500x375")
    return int(parts[0]), int(parts[1])


def out_dir(args: argparse.Namespace, default_name: str) -> Path:
    """``--out``, else ``runs/<default_name>``."""
    return Path(args.out) if getattr(args, "out", None) else Path("runs") / default_name


def timestamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


__all__ = ["add_config_flags", "config_overrides", "flag_name", "out_dir", "positive_int", "timestamp",
           "width_by_height"]
