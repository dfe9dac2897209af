"""One run as a submitit job: train or resume its folder; on preemption or the time limit, checkpoint and requeue.

submitit's checkpoint protocol (``submitit.helpers.Checkpointable``): when the scheduler signals the job (SIGUSR2
before the time limit or a preemption), submitit calls the callable's ``checkpoint()``, pickles the
``DelayedSubmission`` it returns and requeues the job. Here the engine catches the signal first (SIGUSR2 and SIGTERM
are among its stop signals): it finishes the step, writes a checkpoint and returns; the job then hands the signal
on to submitit, whose ``checkpoint()`` call resubmits this same callable. The requeued job finds the checkpoint and
resumes exactly as ``--resume`` does. A run that fails for its own reasons (a NaN loss, bad data) ends with one
``error: ...`` line and is never requeued.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

REQUEUE_SIGNALS = (signal.SIGUSR2, signal.SIGTERM)
"""The signals a scheduler stops a job with when it means to run it again (preemption, the time limit); SIGINT is a
user's cancel (submitit's ``job.cancel()``, Ctrl-C): the run checkpoints and the job ends without a requeue."""


def has_checkpoint(out: Path) -> bool:
    """Whether the run folder holds a checkpoint to resume from (the study runner's rule for "resume")."""
    ckpts = out / "checkpoints"
    return ckpts.is_dir() and any(ckpts.iterdir())


def join_job_group() -> None:
    """Several tasks in this job: export what torchrun would (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR/PORT) from
    Slurm's environment, so :func:`resnet.engine.distributed.init_distributed` joins them into one process group
    and the run trains exactly as under torchrun. Every GPU stays visible: the engine picks ``LOCAL_RANK``'s."""
    import submitit

    if submitit.JobEnvironment().num_tasks > 1:
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)


class RunJob:
    """The callable submitted per run: trains ``cfg`` (a plain config dict) into the run folder ``out``; ``study``
    also records the wall time a study's report shows."""

    def __init__(self, cfg: dict[str, Any], out: str, study: bool = False) -> None:
        self.cfg, self.out, self.study = cfg, out, study

    def __call__(self) -> dict[str, Any]:
        from resnet.classify import train
        from resnet.config import from_dict
        from resnet.errors import ResNetError
        from resnet.experiments.common import record_wall

        out = Path(self.out)
        if (out / "final.json").is_file():  # requeued after its last write: nothing left to train
            return {"done": str(out)}
        join_job_group()
        rank = int(os.environ.get("RANK", "0"))
        t0 = time.perf_counter()
        try:
            result = train(from_dict(self.cfg), out, resume=has_checkpoint(out))
        except ResNetError as e:  # the run's own failure: say it in one line, and do not requeue
            if rank == 0:
                print(f"error: {e}", flush=True)
            return {"error": str(e)}
        stopped = result.get("stopped_by_signal")
        if stopped is not None:
            if stopped in REQUEUE_SIGNALS:
                import submitit

                # The checkpoint is written: now let submitit's handler (which the engine restored) run its protocol:
                # checkpoint() below, requeue, exit. On ranks other than 0 it only logs, and the job ends here.
                # `scontrol requeue` refused: Slurm requeues (preemption, an admin's requeue) or ends (scancel) this
                # job itself; the checkpoint serves either way.
                with contextlib.suppress(subprocess.CalledProcessError):
                    signal.raise_signal(submitit.JobEnvironment._usr_sig())
            message = f"stopped by signal {stopped} at iteration {result.get('step')}; it resumes when submitted again"
            if rank == 0:
                print(f"error: {message}", flush=True)
            return {"error": message}
        if rank == 0 and self.study:
            record_wall(out, time.perf_counter() - t0)
        return result

    def checkpoint(self) -> Any:
        """submitit's hook on preemption or time-out: resubmit this same run (it resumes from its checkpoint)."""
        import submitit

        return submitit.helpers.DelayedSubmission(RunJob(self.cfg, self.out, self.study))


__all__ = ["REQUEUE_SIGNALS", "RunJob", "has_checkpoint", "join_job_group"]
