"""The engine's loader workers: a stop signal from another process is left to the main process, one from the main
process ends them, and a process that exits with its loader's workers still running ends."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="sigwaitinfo and fork-started workers: Linux")

LOADER = """
import os, signal, subprocess, time
from torch.utils.data import DataLoader
from resnet.data.workers import loader_settings
loader = DataLoader(list(range(1000)), batch_size=2, num_workers=1, persistent_workers=True, **loader_settings())
it = iter(loader)
next(it)
worker = it._workers[0]
"""


def _run(body: str) -> subprocess.CompletedProcess:
    script = textwrap.dedent(LOADER) + textwrap.dedent(body)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)


def test_a_process_exiting_with_its_loader_workers_alive_ends():
    """Python's multiprocessing ends a loader still alive at exit by sending its workers SIGTERM and waiting for
    them (before: the workers ignored every SIGTERM and the exit waited for ever)."""
    done = _run("print('exiting', flush=True)\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "exiting"


def test_a_stop_signal_from_another_process_leaves_the_worker_serving():
    done = _run("""
        for sig in ("TERM", "HUP", "USR2"):
            subprocess.run(["kill", f"-{sig}", str(worker.pid)], check=True)
            time.sleep(0.3)
            assert worker.is_alive(), f"the worker died of another process's SIG{sig}"
            for _ in range(20):
                next(it)
        print("served", flush=True)
        """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "served"


def test_sigterm_from_the_main_process_ends_the_worker():
    done = _run("""
        os.kill(worker.pid, signal.SIGTERM)
        worker.join(30)
        print(worker.exitcode, flush=True)
        """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0"  # torch's own handler exits 0 for its main process's SIGTERM
