"""Run a study's training runs: reuse finished ones, resume interrupted ones, train the rest.

Concurrency: with ``jobs == 1`` runs train one after another inside this process (``train()`` directly). With
``jobs > 1`` each run is a child process, ``python -m resnet.experiments.runner OUT`` reading its config as JSON
on stdin and logging to ``OUT/train.log``. The small CIFAR nets leave a GPU mostly idle (a
ResNet-20 step is launch-bound at a few ms), so several share one device; with several GPUs children are
spread over them round-robin through ``CUDA_VISIBLE_DEVICES``. On CPU the cores are divided between the jobs
(``OMP_NUM_THREADS``); where other work shares the cores, one thread per job wastes less time spinning.

Children die with their parent: each asks the kernel for a SIGTERM when the parent goes (``PR_SET_PDEATHSIG``),
checkpoints and stops, so a killed study leaves no orphan writing its run folders; and a run folder is owned by one
writer (:mod:`resnet.engine.runlock`), so a re-run started while one still writes is refused instead of mixed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import tomli_w

from resnet.config import from_dict, to_dict
from resnet.engine.runlog import last_line
from resnet.errors import ConfigError, ResNetError
from resnet.experiments.common import RunResult, RunSpec, load_result, record_wall
from resnet.launch.job import has_checkpoint
from resnet.paper import depth_of

if TYPE_CHECKING:
    from resnet.launch import Launch

Log = Callable[[str], None]
GPU_JOBS = 4  # concurrent small-net runs per GPU by default


def resolve_device(device: str) -> str:
    """auto -> cuda when available, else cpu; cuda without a GPU is a ConfigError (the engine's rule)."""
    from resnet.engine.distributed import resolve_device as engine_device

    return engine_device(device).type


def default_jobs(device: str, runs: int, per_core: bool = False) -> int:
    """On CUDA min(4 per GPU, runs). On CPU 1 (a run's threads use every core), or with ``per_core`` one
    single-thread run per core: nets small enough to be bound by per-operator overhead (16x16 digits) train
    faster side by side than one at a time on every core."""
    import torch

    if resolve_device(device) != "cuda":
        from resnet.engine.threads import usable_cores

        return max(1, min(usable_cores(), runs)) if per_core else 1
    return max(1, min(GPU_JOBS * max(1, torch.cuda.device_count()), runs))


def _comparable(cfg: dict[str, Any]) -> dict[str, Any]:
    """A config as TOML would hold it, minus where it ran: the device and the CPU threads do not change what is
    trained (a resume keeps the threads the run recorded)."""
    cfg = tomllib.loads(tomli_w.dumps(cfg))
    cfg.get("train", {}).pop("device", None)
    cfg.get("train", {}).pop("threads", None)
    return cfg


def run_state(spec: RunSpec, out: Path) -> str:
    """"done", "resume" (interrupted: checkpoints but no final.json) or "new"; refuses a foreign run folder."""
    from resnet.engine.trainer import apply_recipe_rules

    cfg_file = out / "config.toml"
    if not cfg_file.is_file():
        return "new"
    saved = _comparable(tomllib.loads(cfg_file.read_text()))
    if saved != _comparable(to_dict(apply_recipe_rules(spec.cfg))):
        raise ConfigError(f"{out} holds a run with another config (another --scale, --dataset or --iterations?); "
                          "pass another --out or remove that folder")
    if (out / "final.json").is_file():
        return "done"
    return "resume" if has_checkpoint(out) else "new"


def _train_here(spec: RunSpec, out: Path, resume: bool) -> str | None:
    """Train in this process; a ResNetError (e.g. a diverged run) is returned, not raised, so the study goes on."""
    from resnet.classify import train

    t0 = time.perf_counter()
    try:
        result = train(spec.cfg, out, resume=resume)
    except ResNetError as e:
        return str(e)
    if "stopped_by_signal" in result:
        raise KeyboardInterrupt
    record_wall(out, time.perf_counter() - t0)
    return None


def _child_env(slot: int, jobs: int, device: str) -> dict[str, str]:
    env = dict(os.environ)
    if device == "cuda":
        import torch

        visible = env.get("CUDA_VISIBLE_DEVICES")
        ids = visible.split(",") if visible else [str(i) for i in range(max(1, torch.cuda.device_count()))]
        env["CUDA_VISIBLE_DEVICES"] = ids[slot % len(ids)]
    else:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))
    env[PARENT_ENV] = str(os.getpid())
    return env


PARENT_ENV = "RESNET_PARENT_PID"


def die_with_parent() -> None:
    """Ask Linux to SIGTERM this process when its parent dies (the trainer then checkpoints and stops); if the
    parent is already gone (it died before this call), stop at once. A no-op elsewhere."""
    parent = os.environ.get(PARENT_ENV)
    if not sys.platform.startswith("linux") or not parent:
        return
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != int(parent):
        os.kill(os.getpid(), signal.SIGTERM)


def _launch(spec: RunSpec, out: Path, resume: bool, env: dict[str, str]) -> tuple[subprocess.Popen, IO[str]]:
    out.mkdir(parents=True, exist_ok=True)
    log = open(out / "train.log", "a")  # noqa: SIM115 (closed when the child ends)
    cmd = [sys.executable, "-m", "resnet.experiments.runner", str(out), *(["--resume"] if resume else [])]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT, env=env, text=True)
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(to_dict(spec.cfg)))
    proc.stdin.close()
    return proc, log


def _train_pool(todo: Sequence[tuple[RunSpec, Path, bool]], jobs: int, device: str, log: Log) -> dict[str, str]:
    """Train ``todo`` in at most ``jobs`` child processes at once; returns {folder: error} of failed runs."""
    pending, running, errors = list(todo), {}, {}
    free = list(range(jobs))
    try:
        while pending or running:
            while pending and free:
                spec, out, resume = pending.pop(0)
                slot = free.pop(0)
                running[slot] = (spec, out, *_launch(spec, out, resume, _child_env(slot, jobs, device)))
            time.sleep(0.5)
            for slot, (spec, out, proc, fh) in list(running.items()):
                if proc.poll() is None:
                    continue
                fh.close()
                del running[slot]
                free.append(slot)
                if proc.returncode != 0:
                    errors[spec.folder] = last_line(out / "train.log")
                log(f"  {spec.folder}: {'failed: ' + errors[spec.folder] if spec.folder in errors else 'done'}")
    finally:
        for _spec, _out, proc, fh in running.values():  # interrupted: children checkpoint on SIGTERM and stop
            proc.terminate()
            proc.wait()
            fh.close()
    return errors


def execute(specs: Sequence[RunSpec], runs: Path, jobs: int | None, device: str, log: Log = print,
            per_core: bool = False, launch: Launch | None = None) -> dict[str, RunResult] | None:
    """Make every spec's run folder under ``runs`` hold a finished run; return their results by folder name.

    With ``launch`` the runs train as cluster jobs (:mod:`resnet.launch`); None is returned when it does not wait."""
    unique = {s.folder: s for s in specs}
    todo: list[tuple[RunSpec, Path, bool]] = []
    for folder, spec in unique.items():
        state = run_state(spec, runs / folder)
        if state != "done":
            todo.append((spec, runs / folder, state == "resume"))
    if launch is not None:
        from resnet.launch.submit import JobRun, run_jobs

        log(f"{len(unique)} runs: {len(unique) - len(todo)} already done, {len(todo)} to train as jobs")
        failed = run_jobs([JobRun(s.folder, s.cfg, out) for s, out, _ in todo], runs, launch, log) if todo else {}
        if failed is None:
            return None
        return {f: load_result(s, runs / f, failed.get(f)) for f, s in unique.items()}
    device = resolve_device(device)
    n_jobs = jobs if jobs is not None else default_jobs(device, len(todo), per_core)
    log(f"{len(unique)} runs: {len(unique) - len(todo)} already done, {len(todo)} to train ({n_jobs} at a time)")
    errors: dict[str, str] = {}
    if n_jobs <= 1:
        for i, (spec, out, resume) in enumerate(todo, 1):
            log(f"[{i}/{len(todo)}] training {spec.folder}{' (resuming)' if resume else ''}")
            err = _train_here(spec, out, resume)
            if err is not None:
                errors[spec.folder] = err
                log(f"  {spec.folder} failed: {err}")
    else:
        # Deepest first: the longest runs start while the others fill the remaining slots, so the pool does not end
        # with one long run and idle slots.
        todo.sort(key=lambda t: -(depth_of(t[0].cfg.model.name) or 0))
        errors = _train_pool(todo, n_jobs, device, log)
    return {f: load_result(s, runs / f, errors.get(f)) for f, s in unique.items()}


def _child_main(argv: Sequence[str]) -> int:
    """Child process: read the config JSON on stdin, train into OUT, record the wall time."""
    die_with_parent()  # threads: the trainer's default reads the OMP_NUM_THREADS the pool set (_child_env)
    out, resume = Path(argv[0]), "--resume" in argv[1:]
    cfg = from_dict(json.loads(sys.stdin.read()))
    spec = RunSpec(out.name, out.name, cfg.train.seed, cfg)
    try:
        err = _train_here(spec, out, resume)
    except KeyboardInterrupt:
        print("error: stopped by a signal; the run resumes from its checkpoint next time", flush=True)
        return 130
    if err is not None:
        print(f"error: {err}", flush=True)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(_child_main(sys.argv[1:]))
