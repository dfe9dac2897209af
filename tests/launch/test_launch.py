"""The launcher's options: sbatch's time forms, the [slurm] table, flags that only a cluster launch takes, and the
resources each run asks for."""

from __future__ import annotations

import argparse
import signal

import pytest

from resnet.errors import ConfigError
from resnet.experiments.common import Context, run_config
from resnet.launch import SlurmCfg, add_launch_flags, launch_from_args, parse_time
from resnet.launch.submit import job_state, resources


def _args(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_launch_flags(p)
    return p.parse_args(argv)


@pytest.mark.parametrize(("text", "minutes"), [("90", 90), ("90:30", 91), ("24:00:00", 1440), ("2-12", 3600),
                                               ("1-00:30", 1470), ("1-00:00:01", 1441), (45, 45)])
def test_time_limits_read_as_sbatch_reads_them(text, minutes):
    assert parse_time(text) == minutes


def test_a_bad_time_limit_is_one_config_error():
    with pytest.raises(ConfigError, match="'a day' is not one of sbatch's forms"):
        parse_time("a day")


def test_flags_override_the_slurm_table_and_unknown_keys_are_refused(tmp_path):
    conf = tmp_path / "cluster.toml"
    conf.write_text('[slurm]\npartition = "gpu"\naccount = "lab"\ntime = "2-00:00:00"\ngpus_per_node = 4\n')
    launch = launch_from_args(_args("--launcher", "slurm", "--slurm-config", str(conf), "--partition", "preempt",
                                    "--no-wait"))
    assert launch is not None and not launch.wait
    assert launch.slurm == SlurmCfg(partition="preempt", account="lab", time=2880, gpus_per_node=4)
    conf.write_text('[slurm]\npartitions = "gpu"\n')
    with pytest.raises(ConfigError, match="unknown key 'partitions' in \\[slurm\\]"):
        launch_from_args(_args("--launcher", "slurm", "--slurm-config", str(conf)))


def test_cluster_flags_without_a_cluster_launcher_are_refused():
    assert launch_from_args(_args()) is None
    with pytest.raises(ConfigError, match="--gpus-per-node applies to cluster jobs only; add --launcher slurm"):
        launch_from_args(_args("--gpus-per-node", "2"))
    with pytest.raises(ConfigError, match="--no-wait applies to cluster jobs only"):
        launch_from_args(_args("--no-wait"))


def test_one_gpu_per_cifar_run_eight_tasks_per_imagenet_run_none_on_cpu():
    def cfg(dataset: str, device: str = "auto"):
        ctx = Context(scale="smoke" if dataset == "digits" else "paper", dataset=dataset, data="/data", device=device)
        return run_config(ctx, {"name": "resnet50" if dataset == "imagefolder" else "resnet20"}, seed=0)

    cifar = resources(cfg("cifar10"), SlurmCfg(partition="gpu"))
    assert (cifar["gpus_per_node"], cifar["tasks_per_node"], cifar["nodes"]) == (1, 1, 1)
    assert cifar["slurm_partition"] == "gpu" and cifar["timeout_min"] == 24 * 60
    imagenet = resources(cfg("imagefolder"), SlurmCfg(nodes=2))
    assert (imagenet["gpus_per_node"], imagenet["tasks_per_node"], imagenet["nodes"]) == (8, 8, 2)
    cpu = resources(cfg("digits", device="cpu"), SlurmCfg(tasks_per_node=2))
    assert (cpu["gpus_per_node"], cpu["tasks_per_node"]) == (0, 2)


def test_a_job_whose_process_is_gone_is_not_live():
    assert job_state("local", "999999999") is None
    assert job_state("local", "not-a-pid") is None


def test_the_scheduler_warning_stops_a_run_like_sigterm():
    from resnet.engine.guards import STOP_SIGNALS
    from resnet.launch.job import REQUEUE_SIGNALS

    assert signal.SIGUSR2 in STOP_SIGNALS and set(REQUEUE_SIGNALS) <= set(STOP_SIGNALS)


def test_checkpoint_resubmits_the_same_run():
    pytest.importorskip("submitit")
    from resnet.launch.job import RunJob

    job = RunJob({"model": {"name": "resnet20"}}, "/runs/a", study=True)
    again = job.checkpoint()
    assert isinstance(again.function, RunJob) and again.function is not job
    assert (again.function.cfg, again.function.out, again.function.study) == (job.cfg, job.out, True)


def test_jobs_and_a_cluster_launcher_are_refused_together(tmp_path, capsys):
    from resnet.cli import main

    assert main(["experiment", "depth", "--launcher", "slurm", "--jobs", "2", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "with --launcher slurm each run is its own job" in err, err
