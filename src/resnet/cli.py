"""``resnet`` command line: each subcommand is a thin function over the library.

Every config field is a flag (``--lr``, ``--batch-size``, ``--shortcut`` ...); flags override the recipe, which
overrides the defaults. Expected failures print one line ``error: ...`` and exit 2; ``--debug`` shows the
traceback instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from resnet.config import DataCfg, ModelCfg, OptimCfg, TrainCfg
from resnet.errors import ResNetError

_SECTIONS = {"model": ModelCfg, "data": DataCfg, "optim": OptimCfg, "train": TrainCfg}
_FLAG_NAMES = {("model", "name"): "--model"}  # every other field's flag is its name with dashes


def _flag(section: str, name: str) -> str:
    return _FLAG_NAMES.get((section, name), "--" + name.replace("_", "-"))


def add_config_flags(p: argparse.ArgumentParser, sections: Sequence[str] = tuple(_SECTIONS)) -> None:
    """One flag per config field, its help the field's docstring; values are checked by the config."""
    docs = _field_docs()
    for section in sections:
        group = p.add_argument_group(f"[{section}] options")
        for f in dataclasses.fields(_SECTIONS[section]):
            dest = f"cfg__{section}__{f.name}"
            help_ = docs.get((section, f.name), "")
            if f.type in ("bool", "bool | None") and f.name.startswith("no_"):  # not --no-no-decay-norm-bias
                flag = _flag(section, f.name)
                group.add_argument(flag, dest=dest, action="store_const", const=True, default=None, help=help_)
                group.add_argument("--" + flag[len("--no-"):], dest=dest, action="store_const", const=False,
                                   help=f"the opposite of {flag}")
            elif f.type in ("bool", "bool | None"):
                group.add_argument(_flag(section, f.name), dest=dest, action=argparse.BooleanOptionalAction,
                                   default=None, help=help_)
            else:
                group.add_argument(_flag(section, f.name), dest=dest, default=None, metavar="X", help=help_)


def _field_docs() -> dict[tuple[str, str], str]:
    """Field docstrings (the string literal under each field) read from config.py's source."""
    import ast
    import inspect

    import resnet.config as config_module

    tree = ast.parse(inspect.getsource(config_module))
    docs: dict[tuple[str, str], str] = {}
    names = {cls.__name__: sec for sec, cls in _SECTIONS.items()}
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name in names:
            body = node.body
            for a, b in zip(body, body[1:], strict=False):
                if isinstance(a, ast.AnnAssign) and isinstance(b, ast.Expr) and isinstance(b.value, ast.Constant):
                    docs[(names[node.name], a.target.id)] = str(b.value.value).replace("%", "%%")
    return docs


def config_overrides(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The flags the user actually gave, as nested overrides."""
    out: dict[str, dict[str, Any]] = {}
    for key, value in vars(args).items():
        if key.startswith("cfg__") and value is not None:
            _, section, name = key.split("__", 2)
            out.setdefault(section, {})[name] = value
    return out


def _setup_logging(debug: bool) -> None:
    """Our INFO lines (progress, img/s); other libraries' only from WARNING up (the ONNX exporter's INFO chatter)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("resnet").setLevel(logging.DEBUG if debug else logging.INFO)


def _parser() -> argparse.ArgumentParser:
    from resnet import commands

    p = argparse.ArgumentParser(prog="resnet", description=__doc__.splitlines()[0])
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for register in commands.REGISTRARS:
        register(sub)
    for command in sub.choices.values():  # before or after the subcommand; SUPPRESS keeps an earlier --debug
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    return p


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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``resnet`` console script and ``python -m resnet``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    args = parser.parse_args(argv)
    debug = bool(args.debug)
    _setup_logging(debug)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return int(handler(args) or 0)
    except ResNetError as e:
        if debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except FileNotFoundError as e:
        if debug:
            raise
        print(f"error: file not found: {e.filename or e}", file=sys.stderr)
        return 2
    except OSError as e:  # a file where a folder must be, no permission, a full disk: name the path
        if debug:
            raise
        print(f"error: {e.filename or ''}: {e.strerror or e}; pass another path", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def out_dir(args: argparse.Namespace, default_name: str) -> Path:
    return Path(args.out) if getattr(args, "out", None) else Path("runs") / default_name


if __name__ == "__main__":
    raise SystemExit(main())
