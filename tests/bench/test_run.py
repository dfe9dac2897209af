"""``resnet bench``: every workload produces positive figures and a complete JSON record (never timed asserts);
ratios from median step times; a warning when other processes loaded the machine."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from resnet.bench import register
from resnet.bench.run import resolve_spec
from resnet.bench.timing import Measurement
from resnet.errors import ConfigError


def test_bench_train_cifar_net_times_ours_and_the_usual_eager_loop(bench, capsys):
    record = bench.record(["train", "--model", "resnet20", "--batch-size", "8", "--reference",
                           "--dataset-size", "64"])
    bench.check_figures(record, ["ours", "reference"])
    assert set(record["ratios"]) == {"ours/reference"}
    assert "tensor stream" in record["results"][0]["setup"] and "DataLoader" in record["results"][1]["setup"]
    assert record["results"][0]["extra"]["last_loss"] > 0
    assert record["spec"]["precision"] == "fp32" and record["spec"]["cuda_graphs"] is False
    out = capsys.readouterr().out
    assert "ours/reference:" in out and "img/s" in out


@pytest.mark.slow
def test_bench_train_imagenet_net_against_torchvision(bench):
    record = bench.record(["train", "--model", "resnet18", "--batch-size", "4", "--input-size", "64",
                           "--reference"])
    bench.check_figures(record, ["ours", "reference"])
    assert "torchvision resnet18" in record["results"][1]["setup"]


@pytest.mark.slow
def test_bench_infer_on_cpu_adds_batch1_latency_beside_torchvision(bench):
    record = bench.record(["infer", "--model", "resnet18", "--batch-size", "4", "--input-size", "64",
                           "--reference"])
    bench.check_figures(record, ["ours", "reference", "reference-cl", "ours-b1", "reference-b1", "reference-cl-b1"])
    assert set(record["ratios"]) == {"ours/reference", "ours/reference-cl", "ours-b1/reference-b1",
                                     "ours-b1/reference-cl-b1"}
    assert [r["batch_size"] for r in record["results"]] == [4, 4, 4, 1, 1, 1]
    assert "channels_last" in record["results"][0]["setup"] and "BN folded" in record["results"][0]["setup"]


def test_bench_without_reference_times_ours_only(bench):
    record = bench.record(["infer", "--model", "resnet20", "--batch-size", "1", "--repeats", "2"])
    bench.check_figures(record, ["ours"])
    assert record["ratios"] == {}
    assert len(record["results"][0]["extra"]["repeat_ms_median"]) == 2


@pytest.mark.slow
def test_bench_train_ddp_times_the_step_with_and_without_a_one_process_ddp(bench):
    record = bench.record(["train", "--model", "resnet20", "--batch-size", "8", "--dataset-size", "64", "--ddp",
                           "--bucket-cap-mb", "1"])
    bench.check_figures(record, ["ours", "ours-step", "ours-ddp"])
    assert "buckets 1 MB" in record["results"][2]["setup"] and record["ratios"]["ours-ddp/ours-step"] > 0
    assert not torch.distributed.is_initialized()  # the group is torn down after the measurement


def test_bench_train_seeds_times_the_group_beside_one_run(bench):
    record = bench.record(["train", "--model", "resnet20", "--batch-size", "8", "--dataset-size", "64",
                           "--seeds", "3"])
    bench.check_figures(record, ["ours", "ours-group"])
    group = record["results"][1]
    assert group["batch_size"] == 24 and "3 x our resnet20 as one grouped net" in group["setup"]
    assert record["ratios"]["ours-group/ours"] > 0 and group["extra"]["last_loss"] > 0
    with pytest.raises(SystemExit, match="2"):  # a training flag: infer has none
        bench.run(["infer", "--seeds", "2", *bench.fast])


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


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_bench_train_on_cuda_reports_peak_memory_and_both_references(bench, tmp_path):
    out = tmp_path / "gpu.json"
    assert bench.run(["train", "--model", "resnet20", "--batch-size", "32", "--reference", "--iterations", "3",
                      "--warmup", "1", "--device", "cuda", "--workers", "0", "--dataset-size", "256",
                      "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    names = [r["name"] for r in record["results"]]
    assert names == ["ours", "reference", "reference-bf16-cl"]
    assert all(r["peak_mem_mib"] > 0 and r["img_s"] > 0 for r in record["results"])
    assert record["spec"]["cuda_graphs"] is True and record["environment"]["device_name"]


def test_check_is_refused_outside_train():
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    with pytest.raises(SystemExit):  # each workload has its own flags: --check is train's
        parser.parse_args(["bench", "infer", "--device", "cpu", "--check"])
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


def _row(name: str, batch: int, median: float, mean: float, img_s: float) -> Measurement:
    return Measurement(name, "x", batch, 10, img_s=img_s, ms_median=median, ms_mean=mean)


def test_ratios_come_from_median_step_times_whatever_the_means_say():
    from resnet.bench.run import ratios

    # ours: median 10 ms but one long stall (mean 30 ms); reference steady at 20 ms. img/s over the span follows
    # the mean and would call ours slower; per image at the median ours is twice as fast.
    ours, ref = _row("ours", 8, 10.0, 30.0, 8 / 0.030), _row("reference", 8, 20.0, 20.0, 8 / 0.020)
    b1, ref_b1 = _row("ours-b1", 1, 4.0, 4.0, 250.0), _row("reference-b1", 1, 5.0, 9.0, 111.0)
    assert ratios([ours, ref, b1, ref_b1]) == {"ours/reference": pytest.approx(2.0),
                                               "ours-b1/reference-b1": pytest.approx(1.25)}
    ddp, step = _row("ours-ddp", 16, 40.0, 41.0, 1.0), _row("ours-step", 8, 10.0, 50.0, 1.0)
    assert ratios([ddp, step])["ours-ddp/ours-step"] == pytest.approx(0.5)  # images per ms: 16/40 over 8/10


def test_the_table_says_what_the_ratios_are_computed_from():
    from resnet.bench.run import format_table, ratios

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    spec = resolve_spec(parser.parse_args(["bench", "infer", "--model", "resnet20", "--device", "cpu"]))
    rows = [_row("ours", 8, 10.0, 30.0, 1.0), _row("reference", 8, 20.0, 20.0, 1.0)]
    env = {"device_name": "cpu", "torch": torch.__version__, "date": "today"}
    one = format_table(spec, env, rows, ratios(rows)).splitlines()
    assert one[-2] == "ratios of img/s at the median ms/step:" and one[-1] == "ours/reference: 2.00x"
    three = format_table(spec, env, rows, ratios(rows), repeats=3)
    assert "at the median ms/step, each row the best of 3 interleaved rounds:" in three


def test_a_loaded_machine_is_named_in_the_table_and_the_record():
    from resnet.bench.run import load_warning, run_bench

    assert load_warning(0.5, 1.9, 2) is None
    assert load_warning(3.5, 1.0, 2) == "warning: figures disturbed: load average 3.50 on 2 cores"
    assert load_warning(None, 1.5, 1) == "warning: figures disturbed: load average 1.50 on 1 core"
    assert load_warning(None, None, 1) is None
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["bench", "infer", "--model", "resnet20", "--batch-size", "1", "--input-size", "16",
                              "--iterations", "1", "--warmup", "0", "--device", "cpu"])
    torch.set_num_threads(1)
    spec = resolve_spec(args)
    readings = iter([0.2, 6.0])  # before and after the run
    record = run_bench(spec, args, load=lambda: next(readings))
    assert record["warnings"] == ["warning: figures disturbed: load average 6.00 on 1 core"]
    assert record["table"].endswith(record["warnings"][0])
    assert record["environment"]["load_avg_1m"] == 0.2 and record["environment"]["load_avg_1m_after"] == 6.0
    assert run_bench(spec, args, load=lambda: 0.5)["warnings"] == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_bench_on_cuda_without_a_gpu_is_the_engines_one_line_error(bench, capsys):
    assert bench.run(["infer", "--model", "resnet20", "--device", "cuda"]) == 2
    assert capsys.readouterr().err.strip() == ("error: --device cuda was asked for but no CUDA device is visible; "
                                               "use --device cpu")
