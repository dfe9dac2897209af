"""``resnet bench memory``: runs through the CLI on a tiny input; checkpointing reports fewer bytes."""

import json

import torch

from resnet.bench.memory import MemoryRecord, run_memory, saved_tensor_bytes


def test_saved_tensor_bytes_counts_each_saved_activation_once_and_no_weights():
    conv = torch.nn.Conv2d(3, 4, 3, bias=False)
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    # conv saves its input (and its weight, not counted); relu saves its output (2x4x6x6), in place or not
    net = torch.nn.Sequential(conv, torch.nn.ReLU())
    assert saved_tensor_bytes(net, x) == 4 * (x.numel() + 2 * 4 * 6 * 6)


def test_bench_memory_command_prints_both_figures_and_writes_json(tmp_path, capsys):
    from resnet.cli import main

    threads = torch.get_num_threads()
    out = tmp_path / "memory.json"
    try:
        code = main(["bench", "memory", "--model", "resnet20", "--batch-size", "2", "--device", "cpu",
                     "--threads", "1", "--json", str(out)])
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    text = capsys.readouterr().out
    assert "without checkpointing" in text and "with checkpointing" in text and "ratio with/without" in text
    record = json.loads(out.read_text())
    assert record["model"] == "resnet20" and record["measure"] == "saved for backward"
    assert 0 < record["with_bytes"] < record["without_bytes"] and 0 < record["ratio"] < 1


def test_checkpointing_saves_most_of_a_deep_preact_nets_activations():
    record = run_memory("preact_resnet164", 2, 16, torch.device("cpu"))
    assert isinstance(record, MemoryRecord) and record.ratio < 0.5
