"""``resnet detect``: a short real training run end to end, then eval, predict and make-scenes on its folder; bad
input as one error line; ``resnet bench detect``."""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path

import pytest
import torch
from _detection_files import TINY

from resnet.cli import main


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("detect") / "run"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        code = main(["detect", "train", *TINY, "--iterations", "4", "--eval-every", "2", "--score-thresh", "0",
                     "--out", str(out)])
    finally:
        torch.set_num_threads(before)
    assert code == 0
    return out


def test_train_writes_a_run_folder_with_map_columns_and_its_detect_section(trained_run):
    for name in ("config.toml", "run.json", "metrics.jsonl", "curves.png", "model.safetensors", "final.json"):
        assert (trained_run / name).is_file(), name
    assert list((trained_run / "tensorboard").iterdir()) and list((trained_run / "checkpoints").iterdir())
    rows = [json.loads(line) for line in (trained_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4]
    assert {"test_map50_error", "test_coco_map", "test_coco_map50", "test_voc07_map", "train_loss_classifier",
            "train_loss_objectness"} <= rows[0].keys()
    saved = tomllib.loads((trained_run / "config.toml").read_text())
    assert saved["detect"]["scene_size"] == 64 and not (trained_run / "detect.toml").exists()
    cleaning = json.loads((trained_run / "final.json").read_text())["cleaning"]  # what the data became, kept
    assert cleaning["train"]["images"] == 8 and cleaning["test"]["images"] == 4 and cleaning["train"]["boxes"] > 0


def test_a_coco_split_whose_every_box_is_degenerate_is_refused_with_the_cleaning_counts(tmp_path, capsys):
    from _detection_files import COCO_CATEGORIES, COCO_IMAGES, write_coco_set

    flat = [{"image_id": i + 1, "category_id": 3, "bbox": [2, 2, 0, 5]} for i in range(len(COCO_IMAGES))]
    write_coco_set(tmp_path / "coco", "train", COCO_IMAGES, flat, COCO_CATEGORIES)
    code, _, err = run(["detect", "train", *TINY, "--dataset", "coco", "--data", tmp_path / "coco", "--train-split",
                        "train", "--test-split", "train", "--iterations", "1", "--out", tmp_path / "run"], capsys)
    assert code == 2 and "Traceback" not in err
    assert "no box left to train on (3 images, 0 boxes to train on; 0 clipped to their image, 3 dropped" in err


def test_eval_prints_the_metrics_table_and_writes_coco_results(trained_run, capsys):
    code, out, _ = run(["detect", "eval", trained_run, "--device", "cpu"], capsys)
    assert code == 0
    assert "mAP@[.5:.95]" in out and "mAP@.5 " in out and "VOC07" in out and "4 images" in out
    results = json.loads((trained_run / "detections-scenes-test.json").read_text())
    assert isinstance(results, list)
    assert all({"image_id", "category_id", "bbox", "score"} <= r.keys() for r in results)


def test_eval_on_the_scenes_written_as_coco_files_matches_the_embedded_scenes(trained_run, tmp_path, capsys):
    code, out, _ = run(["detect", "make-scenes", tmp_path / "scenes", "--train", "2", "--test", "4", "--size", "64"],
                       capsys)
    assert code == 0 and (tmp_path / "scenes" / "instances_test.json").is_file()
    embedded = run(["detect", "eval", trained_run, "--device", "cpu"], capsys)[1]
    code, from_files, _ = run(["detect", "eval", trained_run, "--device", "cpu", "--dataset", "coco", "--data",
                               tmp_path / "scenes", "--test-split", "test"], capsys)
    assert code == 0
    table = [line for line in embedded.splitlines() if line.startswith("mAP")]
    assert table == [line for line in from_files.splitlines() if line.startswith("mAP")]


def test_predict_draws_boxes_into_pngs_and_writes_their_detections(trained_run, tmp_path, capsys):
    from torchvision.io import decode_png, write_png

    image = torch.randint(0, 255, (3, 80, 96), dtype=torch.uint8)
    write_png(image, str(tmp_path / "scene.png"))
    code, out, _ = run(["detect", "predict", tmp_path / "scene.png", "--weights", trained_run, "--out",
                        tmp_path / "drawn", "--min-score", "0", "--device", "cpu"], capsys)
    assert code == 0
    drawn = decode_png(torch.frombuffer(bytearray((tmp_path / "drawn" / "scene.png").read_bytes()), dtype=torch.uint8))
    k = 384 // 96  # a small image is drawn enlarged by a whole factor, so its labels can be read
    assert drawn.shape == (3, 80 * k, 96 * k)
    found = json.loads((tmp_path / "drawn" / "detections.json").read_text())
    assert found[0]["file"].endswith("scene.png") and found[0]["detections"]  # score threshold 0: boxes come out
    assert not torch.equal(drawn, image.repeat_interleave(k, 1).repeat_interleave(k, 2))
    for det in found[0]["detections"]:
        x0, y0, x1, y1 = det["box_xyxy"]
        assert 0 <= x0 <= x1 <= 96 and 0 <= y0 <= y1 <= 80 and det["label"] in [str(d) for d in range(10)]


@pytest.mark.parametrize(("argv", "message"), [
    (["--design", "c5"], "detect.design='c5' is not valid; choose one of: c4, fpn"),
    (["--init-from", "no/such/run"], "--init-from no/such/run: no such file or folder"),
    (["--dataset", "coco"], "--dataset coco needs --data PATH"),
    (["--anchor-sizes", "big"], "detect.anchor_sizes='big' is not a valid list of int"),
    (["--recipe", "quick"], "recipe quick is a classification recipe; train it with: resnet train --recipe quick"),
])
def test_bad_train_input_is_one_error_line(argv, message, tmp_path, capsys):
    code, _, err = run(["detect", "train", *TINY, "--iterations", "1", "--out", tmp_path / "run", *argv], capsys)
    assert code == 2 and "Traceback" not in err
    assert err.startswith(f"error: {message}") or message in err, err


def _copy_run(trained_run, folder):
    import shutil

    shutil.copytree(trained_run, folder, ignore=shutil.ignore_patterns(".lock"))
    return folder


@pytest.mark.parametrize(("flags", "field"), [(["--lr", "0.5"], "optim.lr"), (["--seed", "9"], "train.seed"),
                                              (["--model", "resnet32"], "model.name"), (["--design", "fpn"],
                                                                                        "detect.design")])
def test_a_detection_resume_that_would_change_the_run_is_refused_before_anything_is_written(
        trained_run, tmp_path, capsys, flags, field):
    run_dir = _copy_run(trained_run, tmp_path / "run")
    def files():  # the run's files; the lock file is the lock's own
        return {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file() and p.name != ".lock"}

    before = files()
    code, _, err = run(["detect", "train", "--resume", run_dir, *flags], capsys)
    assert code == 2 and err.startswith(f"error: {field} cannot change on resume"), err
    assert files() == before


@pytest.mark.slow
def test_a_detection_run_folder_from_before_the_detect_section_still_resumes(trained_run, tmp_path, capsys):
    """Detection runs kept [detect] in detect.toml beside a config.toml without it: read, never written again."""
    import tomli_w

    run_dir = _copy_run(trained_run, tmp_path / "old")
    saved = tomllib.loads((run_dir / "config.toml").read_text())
    (run_dir / "detect.toml").write_text(tomli_w.dumps({"detect": saved.pop("detect")}))
    (run_dir / "config.toml").write_text(tomli_w.dumps(saved))
    code, out, err = run(["detect", "train", "--resume", run_dir, "--iterations", "6", "--eval-every", "2"], capsys)
    assert code == 0, err
    assert json.loads((run_dir / "final.json").read_text())["step"] == 6
    assert tomllib.loads((run_dir / "config.toml").read_text())["detect"]["scene_size"] == 64
    change = json.loads((run_dir / "changes.jsonl").read_text().splitlines()[-1])["changed"]
    assert set(change) == {"train.iterations", "optim.milestones_frac", "optim.milestones"}
    assert change["optim.milestones"] == [[3], [3]]  # 0.8 of 4 iterations, passed: it stays


def test_each_train_command_refuses_the_other_tasks_run_in_one_line(trained_run, tmp_path, capsys):
    code, _, err = run(["train", "--resume", trained_run], capsys)
    assert code == 2 and f"holds a detection run; train it with: resnet detect train --resume {trained_run}" in err
    code, _, err = run(["train", "--recipe", "detect-quick", "--out", tmp_path / "x"], capsys)
    assert code == 2 and "train it with: resnet detect train --recipe detect-quick" in err, err


def test_detect_train_prints_its_config_and_shows_defaults_in_help(capsys):
    code, out, _ = run(["detect", "train", "--print-config", "--design", "fpn"], capsys)
    saved = tomllib.loads(out)
    assert code == 0 and saved["recipe"] == "detect-quick" and saved["detect"]["design"] == "fpn"
    with pytest.raises(SystemExit):
        main(["detect", "train", "--help"])
    assert "(default: c4, the detect-quick recipe's; built-in c4)" in capsys.readouterr().out


def test_predict_never_overwrites_its_inputs_and_keeps_same_named_images_apart(trained_run, tmp_path, capsys):
    from torchvision.io import write_png

    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        write_png(torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8), str(tmp_path / folder / "scene.png"))
    image = tmp_path / "a" / "scene.png"
    before = image.read_bytes()
    code, _, err = run(["detect", "predict", image.with_suffix(".png"), "--weights", trained_run, "--out",
                        tmp_path / "a", "--device", "cpu"], capsys)
    assert code == 2 and "would overwrite the input image" in err and image.read_bytes() == before
    code, out, _ = run(["detect", "predict", image, tmp_path / "b" / "scene.png", "--weights", trained_run, "--out",
                        tmp_path / "drawn", "--min-score", "1.0", "--device", "cpu"], capsys)
    assert code == 0 and (tmp_path / "drawn" / "scene.png").is_file() and (tmp_path / "drawn" / "scene-2.png").is_file()
    assert "0 object(s) (no box scored --min-score 1.0; the best scored" in out or "proposed no box" in out
    code, _, err = run(["detect", "predict", image, "--weights", trained_run, "--out", tmp_path / "drawn",
                        "--device", "cpu"], capsys)
    assert code == 2 and "detections.json already exists" in err


def test_detect_predict_refuses_an_image_over_max_pixels_naming_its_own_flag(trained_run, tmp_path, capsys):
    from torchvision.io import write_png

    write_png(torch.zeros(3, 120, 100, dtype=torch.uint8), str(tmp_path / "big.png"))
    argv = ["detect", "predict", tmp_path / "big.png", "--weights", trained_run, "--device", "cpu"]
    code, _, err = run([*argv, "--out", tmp_path / "a", "--max-pixels", "10000"], capsys)
    assert code == 2 and "more than data.max_pixels=10000; raise --max-pixels" in err and "Traceback" not in err
    code, _, err = run([*argv, "--out", tmp_path / "b", "--max-pixels", "12000"], capsys)
    assert code == 0, err


@pytest.mark.parametrize("tensor", ["rpn.head.cls_logits.weight", "roi_heads.box_predictor.cls_score.weight"])
def test_finite_detector_weights_that_overflow_float32_are_an_error_not_silence(trained_run, tmp_path, capsys,
                                                                                 tensor):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file
    from torchvision.io import write_png

    source = trained_run / "model.safetensors"
    with safe_open(str(source), "pt") as f:
        metadata = f.metadata()
    state = load_file(str(source))
    state[tensor] = torch.full_like(state[tensor], 3e38)  # finite, but its products are not
    save_file(state, str(tmp_path / "overflow.safetensors"), metadata=metadata)
    write_png(torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8), str(tmp_path / "scene.png"))
    for argv in (["detect", "predict", tmp_path / "scene.png", "--weights", tmp_path / "overflow.safetensors",
                  "--out", tmp_path / "drawn", "--min-score", "0", "--device", "cpu"],
                 ["detect", "eval", tmp_path / "overflow.safetensors", "--device", "cpu"]):
        code, out, err = run(argv, capsys)
        assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
        assert "are NaN/Inf: its weights overflow float32 arithmetic (largest magnitude 3e+38 in" in err
        assert "object(s)" not in out  # before: "0 object(s) (the detector proposed no box)", exit 0


def test_eval_of_a_classification_run_says_it_is_no_detector(tmp_path, capsys):
    import resnet

    resnet.save_weights(resnet.create_model("resnet20"), tmp_path / "model.safetensors")
    code, _, err = run(["detect", "eval", tmp_path], capsys)
    assert code == 2 and "not a detector's weights" in err


@pytest.mark.slow
def test_bench_detect_times_ours_beside_torchvision(tmp_path, capsys):
    code, out, _ = run(["bench", "detect", "--model", "resnet18", "--input-size", "64", "--batch-size", "1",
                        "--iterations", "1", "--warmup", "0", "--device", "cpu", "--json", tmp_path / "b.json"],
                       capsys)
    assert code == 0
    rows = [line.split()[0] for line in out.splitlines()[2:5]]
    assert rows == ["ours-fpn", "ours-c4", "torchvision"]
    record = json.loads((tmp_path / "b.json").read_text())
    assert record["results"]["torchvision"]["train"]["img_s"] > 0
    assert os.fspath(Path(tmp_path / "b.json")) in out


@pytest.mark.slow
def test_a_short_detection_trial_can_pretrain_its_backbone_briefly(tmp_path, capsys):
    tiny = [a for a in TINY if a not in ("--pretrain", "none")]
    code, _, err = run(["detect", "train", *tiny, "--pretrain", "quick", "--pretrain-iterations", "2", "--iterations",
                        "2", "--eval-every", "2", "--out", tmp_path / "run"], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "run" / "pretrain" / "final.json").read_text())["step"] == 2
    saved = tomllib.loads((tmp_path / "run" / "config.toml").read_text())["detect"]
    assert saved["pretrain_iterations"] == 2 and saved["init_from"] == str(tmp_path / "run" / "pretrain")
