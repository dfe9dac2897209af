"""On a live Slurm (``scripts/slurm_local.sh`` starts one; skipped where ``squeue`` does not answer): a study submitted
with ``--no-wait`` is collected by the same command, which submits nothing the second time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _slurm_answers() -> bool:
    try:
        return subprocess.run(["squeue", "--noheader"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@pytest.mark.skipif(not _slurm_answers(), reason="no live Slurm here (scripts/slurm_local.sh starts one)")
def test_a_study_on_slurm_is_submitted_then_collected(tmp_path):
    pytest.importorskip("submitit")
    src = str(Path(__import__("resnet").__file__).resolve().parents[1])
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(filter(None, [src, os.environ.get(
        "PYTHONPATH")])))
    env.pop("RESNET_SUBMITIT_CLUSTER", None)
    conf = tmp_path / "cluster.toml"
    conf.write_text('[slurm]\ncpus_per_task = 1\ntime = 10\n')
    argv = [sys.executable, "-m", "resnet", "experiment", "depth", "--nets", "resnet20", "--seeds", "2",
            "--iterations", "4", "--batch-size", "8", "--device", "cpu", "--out", str(tmp_path / "study"),
            "--launcher", "slurm", "--slurm-config", str(conf)]
    first = subprocess.run([*argv, "--no-wait"], env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0 and first.stdout.count("submitted as job") == 2, first.stdout + first.stderr
    second = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "submitted as job" not in second.stdout and "2 done, 0 failed" in second.stdout, second.stdout
    jobs = json.loads((tmp_path / "study" / "runs" / "jobs.json").read_text())
    assert {r["cluster"] for r in jobs.values()} == {"slurm"} and len({r["job_id"] for r in jobs.values()}) == 2
    assert (tmp_path / "study" / "report.md").is_file()
