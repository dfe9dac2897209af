"""Training runs as cluster jobs: ``--launcher slurm`` submits each run through submitit.

The training code stays the one ``resnet train`` runs; the launcher only submits, requeues and collects, as the
``submitit_*.py`` launchers of facebookresearch/dinov2 and facebookresearch/mae do:

- :mod:`resnet.launch.job`: the job itself (:class:`~resnet.launch.job.RunJob`), a submitit checkpointable callable:
  it trains or resumes one run folder, joins the job's tasks into one process group from Slurm's environment
  (the engine's torchrun path), and on preemption or the time limit checkpoints and requeues.
- :mod:`resnet.launch.submit`: the submitting side: resources per run, the job ids recorded beside the run folders,
  submitting only what no live job holds, and waiting with progress.

This module holds the options (flags and the ``[slurm]`` table of a TOML file) and imports neither torch nor
submitit, so ``--help`` stays fast and submitit is needed only where a job is submitted.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from resnet.errors import ConfigError

LAUNCHERS: tuple[str, ...] = ("local", "slurm")
CLUSTER_ENV = "RESNET_SUBMITIT_CLUSTER"
"""For tests: ``RESNET_SUBMITIT_CLUSTER=local`` makes ``--launcher slurm`` submit to submitit's LocalExecutor (real
submitit, real child processes, no Slurm); every other step is the Slurm path's."""


@dataclass(frozen=True)
class SlurmCfg:
    """What each run's job asks Slurm for; None = the default for the run (see :func:`resnet.launch.submit.resources`:
    one GPU per CIFAR or digits run, 8 per ImageNet run)."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time: int | None = None
    """Time limit per job in minutes (a run that reaches it is requeued and resumes); default 24 hours."""
    nodes: int | None = None
    gpus_per_node: int | None = None
    tasks_per_node: int | None = None
    """Processes per node; default one per GPU (or 1 on CPU). Several tasks train as one torchrun-style group."""
    cpus_per_task: int | None = None
    mem_gb: int | None = None

    def __post_init__(self) -> None:
        for name in ("nodes", "gpus_per_node", "tasks_per_node", "cpus_per_task", "mem_gb", "time"):
            value = getattr(self, name)
            low = 0 if name == "gpus_per_node" else 1
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < low):
                raise ConfigError(f"slurm {name} = {value!r} must be an integer >= {low}")


SLURM_KEYS = tuple(f.name for f in dataclasses.fields(SlurmCfg))


@dataclass(frozen=True)
class Launch:
    """Where runs train when not in this process: the cluster, its resources, and whether the command waits."""

    slurm: SlurmCfg = SlurmCfg()
    wait: bool = True
    """Wait for the jobs and show progress; False: submit and return (the same command later collects)."""
    cluster: str = "slurm"
    """submitit's executor: "slurm", or "local" for tests (:data:`CLUSTER_ENV`)."""

    @property
    def poll_s(self) -> float:
        """Seconds between looks at the jobs: squeue is a shared service on a cluster; local jobs are cheap to ask."""
        return 1.0 if self.cluster == "local" else 20.0


def parse_time(value: Any) -> int:
    """Minutes from an integer or one of sbatch ``--time``'s forms: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS
    (seconds round up to a minute)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = str(value).strip()
    m = re.fullmatch(r"(?:(\d+)-)?(\d+(?::\d+){0,2})", text)
    parts = [int(x) for x in m.group(2).split(":")] if m else []
    if not m:
        raise ConfigError(f"slurm time {value!r} is not one of sbatch's forms (minutes, HH:MM:SS, D-HH:MM ...); "
                          "e.g. 1440 or 24:00:00")
    if m.group(1) is not None:  # D-HH[:MM[:SS]]
        hours, minutes, seconds = (parts + [0, 0])[:3]
        return int(m.group(1)) * 1440 + hours * 60 + minutes + (1 if seconds else 0)
    hours, minutes, seconds = parts if len(parts) == 3 else (0, parts[0], parts[1] if len(parts) > 1 else 0)
    return hours * 60 + minutes + (1 if seconds else 0)


def load_slurm_config(path: Path) -> dict[str, Any]:
    """The ``[slurm]`` table of a TOML file, checked: unknown keys are errors, as in every config here."""
    try:
        table = tomllib.loads(path.read_text()).get("slurm")
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"--slurm-config {path}: not valid TOML ({e}); fix the file") from None
    if not isinstance(table, dict):
        raise ConfigError(f"--slurm-config {path} has no [slurm] table; write e.g. [slurm] partition = \"gpu\"")
    unknown = sorted(set(table) - set(SLURM_KEYS))
    if unknown:
        raise ConfigError(f"--slurm-config {path}: unknown key {unknown[0]!r} in [slurm]; valid keys: "
                          f"{', '.join(SLURM_KEYS)}")
    return table


def add_launch_flags(p: argparse.ArgumentParser) -> None:
    """``--launcher``, ``--slurm-config``, the resource flags and ``--no-wait`` (shared by train and experiment)."""
    g = p.add_argument_group("cluster (--launcher slurm: each run is a Slurm job submitted with submitit)")
    g.add_argument("--launcher", choices=LAUNCHERS, default="local",
                   help="local: train here (default); slurm: submit each run as a job, requeued on preemption")
    g.add_argument("--slurm-config", default=None, metavar="FILE", help="a TOML file whose [slurm] table sets "
                                                                        f"any of: {', '.join(SLURM_KEYS)}")
    g.add_argument("--partition", default=None, help="Slurm partition")
    g.add_argument("--account", default=None, help="Slurm account")
    g.add_argument("--time", default=None, metavar="TIME", help="time limit per job, minutes or [D-]HH:MM[:SS] "
                                                                "(default 24:00:00; a run at the limit is requeued)")
    g.add_argument("--nodes", type=int, default=None, help="nodes per run (default 1)")
    g.add_argument("--gpus-per-node", type=int, default=None,
                   help="GPUs per node (default 1 for CIFAR and digits runs, 8 for ImageNet; 0 with --device cpu)")
    g.add_argument("--tasks-per-node", type=int, default=None, help="processes per node (default one per GPU)")
    g.add_argument("--no-wait", action="store_true",
                   help="submit and return; the same command later collects the results, submitting only what is "
                        "missing")


def launch_from_args(args: argparse.Namespace) -> Launch | None:
    """The :class:`Launch` the flags describe, or None for ``--launcher local``; flags override the file's table."""
    flags = {"partition": args.partition, "account": args.account, "time": args.time, "nodes": args.nodes,
             "gpus_per_node": args.gpus_per_node, "tasks_per_node": args.tasks_per_node}
    if args.launcher == "local":
        given = [k for k, v in flags.items() if v is not None]
        if given or args.slurm_config or args.no_wait:
            flag = "--" + (given[0].replace("_", "-") if given else "slurm-config" if args.slurm_config else "no-wait")
            raise ConfigError(f"{flag} applies to cluster jobs only; add --launcher slurm or drop {flag}")
        return None
    table = load_slurm_config(Path(args.slurm_config)) if args.slurm_config else {}
    table.update({k: v for k, v in flags.items() if v is not None})
    if table.get("time") is not None:
        table["time"] = parse_time(table["time"])
    cluster = os.environ.get(CLUSTER_ENV) or "slurm"
    if cluster not in ("slurm", "local"):
        raise ConfigError(f"{CLUSTER_ENV}={cluster!r}: only 'local' (submitit's LocalExecutor, for tests) or unset")
    return Launch(slurm=SlurmCfg(**table), wait=not args.no_wait, cluster=cluster)


__all__ = ["CLUSTER_ENV", "LAUNCHERS", "Launch", "SlurmCfg", "add_launch_flags", "launch_from_args",
           "load_slurm_config", "parse_time"]
