"""``resnet bench``: every workload produces positive figures and a complete JSON record (never timed asserts)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from resnet.bench import register
from resnet.bench.pipeline import make_jpeg_folder
from resnet.bench.run import resolve_spec
from resnet.bench.timing import Measurement, environment, time_steps
from resnet.errors import ConfigError

FAST = ["--iterations", "2", "--warmup", "1", "--device", "cpu", "--threads", "1", "--workers", "0"]


@pytest.fixture(autouse=True)
def _keep_thread_count():
    """``--threads`` sets torch's global thread count; give other tests theirs back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def run_bench(argv: list[str]) -> int:
    """``resnet bench ARGV`` through the CLI's own entry point (so the subcommand's wiring is tested too)."""
    from resnet.cli import main

    return main(["bench", *argv])


def _record(tmp_path: Path, argv: list[str]) -> dict:
    out = tmp_path / "bench.json"
    assert run_bench([*argv, *FAST, "--json", str(out)]) == 0
    return json.loads(out.read_text())


def _check_figures(record: dict, names: list[str]) -> None:
    results = {r["name"]: r for r in record["results"]}
    assert list(results) == names
    for r in results.values():
        assert r["img_s"] > 0 and r["ms_median"] > 0 and r["ms_mean"] > 0 and r["iterations"] == 2
        assert r["peak_mem_mib"] is None  # CPU: no CUDA memory figure
    env = record["environment"]
    for key in ("date", "torch", "torchvision", "device_name", "device_type"):
        assert env[key]
    assert all(v > 0 for v in record["ratios"].values())


def test_bench_train_cifar_net_times_ours_and_the_usual_eager_loop(tmp_path, capsys):
    record = _record(tmp_path, ["train", "--model", "resnet20", "--batch-size", "8", "--reference",
                                "--dataset-size", "64"])
    _check_figures(record, ["ours", "reference"])
    assert set(record["ratios"]) == {"ours/reference"}
    assert "tensor stream" in record["results"][0]["setup"] and "DataLoader" in record["results"][1]["setup"]
    assert record["results"][0]["extra"]["last_loss"] > 0
    assert record["spec"]["precision"] == "fp32" and record["spec"]["cuda_graphs"] is False
    out = capsys.readouterr().out
    assert "ours/reference:" in out and "img/s" in out


def test_bench_train_imagenet_net_against_torchvision(tmp_path):
    record = _record(tmp_path, ["train", "--model", "resnet18", "--batch-size", "4", "--input-size", "64",
                                "--reference"])
    _check_figures(record, ["ours", "reference"])
    assert "torchvision resnet18" in record["results"][1]["setup"]


def test_bench_infer_on_cpu_adds_batch1_latency_beside_torchvision(tmp_path):
    record = _record(tmp_path, ["infer", "--model", "resnet18", "--batch-size", "4", "--input-size", "64",
                                "--reference"])
    _check_figures(record, ["ours", "reference", "reference-cl", "ours-b1", "reference-b1", "reference-cl-b1"])
    assert set(record["ratios"]) == {"ours/reference", "ours/reference-cl", "ours-b1/reference-b1",
                                     "ours-b1/reference-cl-b1"}
    assert [r["batch_size"] for r in record["results"]] == [4, 4, 4, 1, 1, 1]
    assert "channels_last" in record["results"][0]["setup"] and "BN folded" in record["results"][0]["setup"]


def test_bench_without_reference_times_ours_only(tmp_path):
    record = _record(tmp_path, ["infer", "--model", "resnet20", "--batch-size", "1", "--repeats", "2"])
    _check_figures(record, ["ours"])
    assert record["ratios"] == {}
    assert len(record["results"][0]["extra"]["repeat_ms_median"]) == 2


def test_bench_train_ddp_times_the_step_with_and_without_a_one_process_ddp(tmp_path):
    record = _record(tmp_path, ["train", "--model", "resnet20", "--batch-size", "8", "--dataset-size", "64", "--ddp",
                                "--bucket-cap-mb", "1"])
    _check_figures(record, ["ours", "ours-step", "ours-ddp"])
    assert "buckets 1 MB" in record["results"][2]["setup"] and record["ratios"]["ours-ddp/ours-step"] > 0
    assert not torch.distributed.is_initialized()  # the group is torn down after the measurement


def test_bench_pipeline_on_a_generated_jpeg_folder(tmp_path):
    record = _record(tmp_path, ["pipeline", "--batch-size", "4", "--images", "8", "--image-size", "80x60",
                                "--input-size", "32", "--reference"])
    _check_figures(record, ["ours", "reference"])
    assert "FolderTrainStream" in record["results"][0]["setup"]


def test_generated_jpegs_are_readable_images_of_the_asked_size(tmp_path):
    root = make_jpeg_folder(tmp_path, count=6, size=(50, 40), classes=3)
    files = sorted(root.glob("class_*/*.jpg"))
    assert len(files) == 6 and len({f.parent for f in files}) == 3
    with Image.open(files[0]) as img:
        assert img.size == (50, 40) and img.mode == "RGB"


def test_bench_refuses_cuda_graphs_on_the_cpu():
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["bench", "train", "--model", "resnet20", "--device", "cpu", "--cuda-graphs"])
    with pytest.raises(ConfigError, match="CUDA"):
        args.handler(args)


def test_bench_subcommand_defaults_follow_the_engine():
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["bench", "infer"])
    assert args.model == "resnet50" and args.reference is False and args.compile is None
    assert args.precision is None and args.channels_last is None and args.cuda_graphs is None
    cpu = resolve_spec(parser.parse_args(["bench", "infer", "--device", "cpu"]))
    assert not cpu.compile and not cpu.cuda_graphs and cpu.precision == "fp32"
    assert cpu.fold_bn and cpu.channels_last  # CPU inference: NHWC + folded BN (oneDNN); CPU training stays plain
    train = resolve_spec(parser.parse_args(["bench", "train", "--model", "resnet20", "--device", "cpu"]))
    assert not train.channels_last and not train.compile and train.precision == "fp32"
    assert resolve_spec(parser.parse_args(["bench", "infer", "--device", "cpu", "--compile"])).fold_bn
    assert not resolve_spec(parser.parse_args(["bench", "infer", "--device", "cpu", "--compile",
                                               "--no-fold-bn"])).fold_bn
    nhwc_off = parser.parse_args(["bench", "infer", "--device", "cpu", "--no-channels-last"])
    assert not resolve_spec(nhwc_off).channels_last


def test_time_steps_excludes_warmup_and_times_every_step():
    calls = []
    per_step, total = time_steps(lambda: calls.append(1), iterations=3, warmup=2, device=torch.device("cpu"))
    assert len(calls) == 5 and len(per_step) == 3 and total > 0 and all(t >= 0 for t in per_step)


def test_environment_names_device_date_and_versions():
    env = environment(torch.device("cpu"))
    assert env["device_type"] == "cpu" and env["torch"] == torch.__version__ and env["date"]


def test_measurement_serializes_to_plain_json():
    m = Measurement("ours", "x", 8, 2, 10.0, 1.0, 1.1)
    assert json.loads(json.dumps(m.to_dict()))["img_s"] == 10.0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_bench_train_on_cuda_reports_peak_memory_and_both_references(tmp_path):
    out = tmp_path / "gpu.json"
    assert run_bench(["train", "--model", "resnet20", "--batch-size", "32", "--reference", "--iterations", "3",
                      "--warmup", "1", "--device", "cuda", "--workers", "0", "--dataset-size", "256",
                      "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    names = [r["name"] for r in record["results"]]
    assert names == ["ours", "reference", "reference-bf16-cl"]
    assert all(r["peak_mem_mib"] > 0 and r["img_s"] > 0 for r in record["results"])
    assert record["spec"]["cuda_graphs"] is True and record["environment"]["device_name"]


def test_bench_train_check_tracks_bf16_against_eager_fp32_and_records_it(tmp_path):
    record = _record(tmp_path, ["train", "--model", "resnet20", "--batch-size", "8", "--dataset-size", "64",
                                "--precision", "bf16", "--check", "--check-iterations", "60",
                                "--check-run-iterations", "0"])
    check = record["check"]
    assert check["passed"] and all(check["checks"].values()), check
    assert check["iterations"] == 60 and 0 < check["first_steps_max_rel"] < 2e-2  # bf16 rounding, not zero
    assert len(check["window_means_ours"]) == 3 and "check: ours vs eager fp32" in record["table"]


def test_check_fails_a_diverging_curve_and_the_command_exits_1(tmp_path, monkeypatch, capsys):
    from resnet.bench import check

    eager = 2.3 * torch.exp(-torch.arange(60.0) / 8) + 0.02  # a loss that falls as the check's task's does
    assert check.compare(eager.clone(), eager)["passed"]
    assert not check.compare(eager * 1.05, eager)["checks"]["first_steps"]  # 5% at step 1: more than bf16 rounding
    stuck = eager.clone()
    stuck[30:] = 1.0
    result = check.compare(stuck, eager)
    assert not result["checks"]["late_mean"] and not result["checks"]["learned"] and not result["passed"]
    monkeypatch.setattr(check, "run_check", lambda spec, iterations: result)
    assert run_bench(["train", "--model", "resnet20", "--batch-size", "8", "--dataset-size", "64", "--check",
                      "--check-run-iterations", "0", *FAST, "--json", str(tmp_path / "b.json")]) == 1
    assert "do not track" in capsys.readouterr().err
    assert json.loads((tmp_path / "b.json").read_text())["check"]["passed"] is False
    slow = check.compare(eager + 0.3, eager + 0.3)  # tracks exactly, but falls too little in so few steps
    assert [k for k, ok in slow["checks"].items() if not ok] == ["learned"]
    monkeypatch.setattr(check, "run_check", lambda spec, iterations: slow)
    assert run_bench(["train", "--model", "resnet20", "--batch-size", "8", "--dataset-size", "64", "--check",
                      "--check-run-iterations", "0", *FAST, "--json", str(tmp_path / "b.json")]) == 1
    err = capsys.readouterr().err
    assert "not learned in 60 iterations; raise --check-iterations" in err and "do not track" not in err


def test_check_run_trains_the_quick_recipe_both_ways_and_compares_test_errors(tmp_path, monkeypatch):
    from resnet.bench import check

    losses = 2.3 * torch.exp(-torch.arange(40.0) / 8) + 0.02  # the loss half is tested above: a passing stand-in
    monkeypatch.setattr(check, "run_check", lambda spec, iterations: check.compare(losses, losses))
    record = _record(tmp_path, ["train", "--model", "resnet20", "--batch-size", "8", "--dataset-size", "64",
                                "--check", "--check-iterations", "40", "--check-run-iterations", "50"])
    run = record["check_run"]
    assert run["model"] == "resnet20" and run["dataset"] == "digits" and run["iterations"] == 50
    assert run["test_images"] == 360 and run["passed"], run
    # fp32 on the CPU: our switches are the eager loop's, and the CPU is deterministic
    assert run["test_error_ours"] == run["test_error_eager_fp32"] < 45.0
    assert "check: resnet20 trained 50 iterations on digits" in record["table"]


def test_a_failed_check_run_exits_1_and_says_whether_it_was_too_short(tmp_path, monkeypatch, capsys):
    from resnet.bench import check

    losses = 2.3 * torch.exp(-torch.arange(40.0) / 8) + 0.02
    monkeypatch.setattr(check, "run_check", lambda spec, iterations: check.compare(losses, losses))
    argv = ["train", "--model", "resnet20", "--batch-size", "8", "--dataset-size", "64", "--check",
            "--check-iterations", "40", *FAST, "--json", str(tmp_path / "b.json")]
    for ours, eager, says in ((9.0, 1.7, "outside the eager fp32 run's range"), (60.0, 60.0, "did not learn in 20")):
        result = {"model": "resnet20", "dataset": "digits", "iterations": 20,
                  **check.same_error_range(ours, eager, num_test=360, num_classes=10)}
        monkeypatch.setattr(check, "short_run", lambda spec, iterations, result=result: result)
        assert run_bench([*argv, "--check-run-iterations", "20"]) == 1
        assert says in capsys.readouterr().err


def test_test_errors_are_the_same_range_within_the_test_sets_sampling_noise():
    from resnet.bench.check import same_error_range

    close = same_error_range(2.0, 1.67, num_test=360, num_classes=10)
    assert close["passed"] and 2.5 < close["tolerance"] < 3.5  # 3 std of a difference of two 1.7% rates on 360
    assert not same_error_range(6.0, 1.67, num_test=360, num_classes=10)["checks"]["same_range"]
    assert same_error_range(7.5, 6.9, num_test=10_000, num_classes=10)["passed"]  # CIFAR-10's test set
    assert not same_error_range(9.0, 6.9, num_test=10_000, num_classes=10)["passed"]
    unlearned = same_error_range(80.0, 80.0, num_test=360, num_classes=10)
    assert unlearned["checks"]["same_range"] and not unlearned["checks"]["learned"]
    assert not same_error_range(float("nan"), 2.0, num_test=360, num_classes=10)["passed"]


def test_check_is_refused_outside_train(tmp_path):
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    with pytest.raises(ConfigError, match="--check"):
        resolve_spec(parser.parse_args(["bench", "infer", "--device", "cpu", "--check"]))
    with pytest.raises(ConfigError, match="check-iterations"):
        resolve_spec(parser.parse_args(["bench", "train", "--device", "cpu", "--check", "--check-iterations", "10"]))
    with pytest.raises(ConfigError, match="check-run-iterations"):
        resolve_spec(parser.parse_args(["bench", "train", "--device", "cpu", "--check", "--check-run-iterations",
                                        "5"]))


def test_inductor_knobs_are_checked_and_apply_to_our_runs_only():
    from torch._inductor import config as inductor_config

    from resnet.bench.run import measure
    from resnet.bench.workloads import Built, Runner

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    base = ["bench", "train", "--model", "resnet20", "--device", "cpu"]
    spec = resolve_spec(parser.parse_args([*base, "--compile", "--inductor", "max_autotune=True",
                                           "--inductor", "conv_1x1_as_mm=True", "--iterations", "1", "--warmup", "0"]))
    assert spec.inductor == (("max_autotune", True), ("conv_1x1_as_mm", True))
    assert "max_autotune=True" in spec.switches()
    for bad, match in ((["--compile", "--inductor", "no_such_knob=1"], "no such option"),
                       (["--compile", "--inductor", "max_autotune"], "KEY=VALUE"),
                       (["--inductor", "max_autotune=True"], "add --compile")):
        with pytest.raises(ConfigError, match=match):
            resolve_spec(parser.parse_args([*base, *bad]))
    seen = {}

    def probe(name: str) -> Runner:
        def build() -> Built:
            seen[name] = (inductor_config.max_autotune, inductor_config.conv_1x1_as_mm)
            return Built(lambda: None)
        return Runner(name, "probe", 1, build)

    before = (inductor_config.max_autotune, inductor_config.conv_1x1_as_mm)
    for name in ("ours", "reference-compiled"):
        measure(probe(name), spec)
    assert seen == {"ours": (True, True), "reference-compiled": before}
    assert (inductor_config.max_autotune, inductor_config.conv_1x1_as_mm) == before  # restored
