"""``resnet`` command line: each subcommand is a thin function over the library.

Every config field is a flag (``--lr``, ``--batch-size``, ``--shortcut`` ...); flags override the recipe, which
overrides the defaults. Expected failures print one line ``error: ...`` and exit 2; ``--debug`` shows the
traceback instead.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Callable, Sequence

from resnet.engine.threads import set_wait_policy
from resnet.errors import ResNetError
from resnet.printable import printable_line


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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``resnet`` console script and ``python -m resnet``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    set_wait_policy()  # before anything imports torch: libgomp reads it once, when torch loads it
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
        print(f"error: {printable_line(str(e))}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `resnet summary --all | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except FileNotFoundError as e:
        if debug:
            raise
        print(f"error: file not found: {printable_line(str(e.filename or e))}", file=sys.stderr)
        return 2
    except OSError as e:  # a file where a folder must be, no permission, a full disk: name the path
        if debug:
            raise
        print(f"error: {printable_line(str(e.filename or ''))}: {e.strerror or e}; pass another path", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (MemoryError, RuntimeError) as e:  # torch.OutOfMemoryError is a RuntimeError
        if debug or not _out_of_memory(e):
            raise
        print(f"error: out of memory: {printable_line(_first_line(e))}; lower --batch-size, the input size or "
              "--threads, or run where more memory is free (nothing already saved was changed)", file=sys.stderr)
        return 2
    finally:
        _leave_process_group()


def _leave_process_group() -> None:
    """A torchrun rank that ends on an error leaves its process group before the interpreter does: a gloo group
    torn down at exit, its threads still running, can abort the process ("terminate called without an active
    exception", SIGABRT) after the error line was printed, so the exit status would no longer be 2."""
    if "resnet.engine.distributed" not in sys.modules:  # no process group was ever joined: never imported for this
        return
    from resnet.engine.distributed import shutdown

    with contextlib.suppress(Exception):  # a group already broken by a lost peer: the exit goes on regardless
        shutdown()


_OOM = ("can't allocate memory", "out of memory", "not enough memory", "std::bad_alloc")


def _out_of_memory(err: BaseException) -> bool:
    return isinstance(err, MemoryError) or any(s in str(err).lower() for s in _OOM)


def _first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    why = next((line for line in lines if any(s in line.lower() for s in _OOM)), lines[0] if lines else "")
    return why.split("DefaultCPUAllocator: ")[-1] or type(err).__name__


if __name__ == "__main__":
    raise SystemExit(main())
