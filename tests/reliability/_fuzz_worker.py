"""A ``resnet`` process under a memory limit that runs command lines sent on stdin, one JSON list per line, and
answers each with ``{"code": ..., "err": ...}`` on stdout (the fuzz harness, test_fuzz_formats.py).

One process serves many commands so that each mutated file costs its command, not a fresh ``import torch``; the
limit (``RLIMIT_AS``, as ``ulimit -v``) is set before anything is imported, so a command that tries to allocate what
a hostile size asks for fails here as it would for a user whose machine has that much memory.

Usage: ``python _fuzz_worker.py LIMIT_BYTES``.
"""

from __future__ import annotations

import contextlib
import io
import json
import resource
import sys
import traceback


def serve(limit: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    from resnet.cli import main

    answers = sys.stdout
    for line in sys.stdin:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code: int | str = main(json.loads(line))
            except SystemExit as e:  # argparse's usage errors
                code = e.code if isinstance(e.code, int) else 2
            except BaseException:  # what the harness exists to find: anything that is not one error line
                code = "traceback"
                traceback.print_exc(file=err)
        answers.write(json.dumps({"code": code, "err": err.getvalue()[-6000:]}) + "\n")
        answers.flush()


if __name__ == "__main__":
    serve(int(sys.argv[1]))
