"""After training, through the real CLI on one tiny trained run (trained once for the module):
`cifar-tui eval` (top-1/top-5, per class, confusion, ensemble, flip TTA), the epoch event's
top-5, summary.csv and TensorBoard hparams, `cifar-tui predict` on image files, and
`cifar-tui export` to ONNX and TorchScript loaded where cifar-tui cannot be imported."""
from __future__ import annotations

import csv
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine.data import synthetic_dataset
from engine.data.formats import SYNTHETIC_FOLDER, Split, _write_pickle_folder
from engine.events import read_events

from tests.conftest import cli, new_workspace, set_args, tiny_overrides

CIFAR100_CLASSES = (
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel can castle "
    "caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur dolphin elephant "
    "flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster man "
    "maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree "
    "plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper snail "
    "snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television tiger tractor train trout "
    "tulip turtle wardrobe whale willow_tree wolf woman worm").split()
PER_CLASS = 2  # test images per class: a balanced test set of 200
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)  # data.normalize: cifar100


def write_balanced_data(root: Path) -> Split:
    """The synthetic images as a data folder in the CIFAR-100 pickle format whose meta names
    CIFAR-100's classes, with a test set of PER_CLASS images of every class. Returns the test split."""
    assert len(CIFAR100_CLASSES) == 100
    ds = synthetic_dataset(0, 512, 2500)
    picked = np.concatenate([np.flatnonzero(ds.test.labels == c)[:PER_CLASS] for c in range(100)])
    picked.sort()
    test = Split(images=ds.test.images[picked].copy(), labels=ds.test.labels[picked].copy())
    root.mkdir(parents=True, exist_ok=True)
    _write_pickle_folder(root / SYNTHETIC_FOLDER, ds.train, test, list(CIFAR100_CLASSES), note="balanced")
    return test


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    ws = new_workspace(tmp_path_factory.mktemp("after"))
    test = write_balanced_data(ws["data"])
    overrides = tiny_overrides(data__test_limit=0, data__normalize="cifar100", data__shuffle="true")
    res = cli(ws, "run", "resnet18_baseline", *set_args(overrides))
    assert res.returncode == 0, res.stdout + res.stderr
    (run_dir,) = [d for d in ws["home"].iterdir() if d.is_dir()]
    events = read_events(run_dir / "events.jsonl")
    return {**ws, "run_id": run_dir.name, "run_dir": run_dir, "events": events, "end": events[-1], "test": test}


@pytest.fixture(scope="module")
def evaluated(trained) -> dict:
    """`cifar-tui eval RUN --json` of the trained run."""
    return run_json(trained, "eval", trained["run_id"])


def run_json(ws: dict, *args: str) -> dict:
    res = cli(ws, *args, "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    return json.loads(res.stdout)


def one_line_error(res: subprocess.CompletedProcess) -> str:
    assert res.returncode == 2, res.stdout + res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    return lines[0]


# ---------------------------------------------------------------------------
# eval


def test_eval_reproduces_the_runs_accuracy_with_per_class_and_confusion(trained, evaluated):
    result = evaluated
    end = trained["end"]
    assert end["status"] == "completed" and result["n"] == 100 * PER_CLASS
    assert result["epoch"] == end["best_epoch"]
    assert result["top1"] == pytest.approx(end["best_acc"], abs=1e-9)
    assert result["top5"] >= result["top1"]
    best_epoch = [e for e in trained["events"] if e["type"] == "epoch" and e["epoch"] == end["best_epoch"]][0]
    assert result["top5"] == pytest.approx(best_epoch["test_top5"], abs=1e-9)

    per_class = result["per_class"]
    assert [r["name"] for r in per_class] == list(CIFAR100_CLASSES)  # names from the data's meta file
    assert all(r["count"] == PER_CLASS for r in per_class)
    assert np.mean([r["accuracy"] for r in per_class]) == pytest.approx(result["top1"])  # balanced test set

    classes, matrix = read_csv_matrix(Path(result["confusion_csv"]))
    assert classes == list(CIFAR100_CLASSES) and matrix.shape == (100, 100)
    assert (matrix.sum(1) == PER_CLASS).all()  # rows: the images of each true class
    assert 100.0 * np.trace(matrix) / matrix.sum() == pytest.approx(result["top1"])
    for pair in result["confused"]:
        assert matrix[classes.index(pair["true"]), classes.index(pair["predicted"])] == pair["count"] > 0
    png = Path(result["confusion_png"])
    assert png.parent == trained["run_dir"] / "eval" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(png) as im:
        assert min(im.size) >= 600  # a 100-class heat map with readable labels

    db = sqlite3.connect(trained["home"] / "cifar_tui.db")
    row = db.execute("SELECT key, ckpt, tta, n, top1, top5, members FROM evals WHERE key=?", (trained["run_id"],)).fetchone()
    assert row[:6] == (trained["run_id"], "best", "none", 200, result["top1"], result["top5"])
    assert json.loads(row[6]) == [trained["run_id"]]


def read_csv_matrix(path: Path) -> tuple[list[str], np.ndarray]:
    rows = list(csv.reader(path.open()))
    return rows[0][1:], np.array([[int(v) for v in r[1:]] for r in rows[1:]])


def test_an_ensemble_of_a_run_with_itself_is_that_run_and_flip_tta_is_kept_apart(trained, evaluated):
    run_id = trained["run_id"]
    single = evaluated
    both = run_json(trained, "eval", run_id, run_id)
    assert [m["run_id"] for m in both["members"]] == [run_id, run_id]
    for key in ("n", "top1", "top5"):
        assert both[key] == single[key]
    assert both["loss"] == pytest.approx(single["loss"], rel=1e-6)
    assert [r["accuracy"] for r in both["per_class"]] == [r["accuracy"] for r in single["per_class"]]
    assert Path(both["confusion_csv"]).parent.parent == trained["home"] / "ensembles"
    assert read_csv_matrix(Path(both["confusion_csv"]))[1].tolist() == read_csv_matrix(Path(single["confusion_csv"]))[1].tolist()

    # what `cifar-tui eval` prints without --json (the same function, recorded in-process)
    from rich.console import Console

    from cifar_tui.commands.model import render_eval

    console = Console(record=True, width=200)
    render_eval(both, console)
    text = console.export_text()
    assert "ensemble of 2" in text and text.count(run_id) == 2 and "Most confused" in text and "Worst classes" in text
    assert f"{both['top1']:.2f}" in text and both["confusion_png"] in text

    flipped = run_json(trained, "eval", run_id, "--tta", "flip")
    assert flipped["tta"] == "flip" and flipped["top5"] >= flipped["top1"]
    assert Path(flipped["confusion_csv"]).name == "best-tta-flip-confusion.csv"
    assert Path(single["confusion_csv"]).is_file()  # the plain evaluation's files stay
    db = sqlite3.connect(trained["home"] / "cifar_tui.db")
    assert {r[0] for r in db.execute("SELECT tta FROM evals WHERE key=?", (run_id,))} == {"none", "flip"}


def test_eval_refusals_are_one_line(trained):
    # a completed run keeps no last.pt by default
    line = one_line_error(cli(trained, "eval", trained["run_id"], "--ckpt", "last"))
    assert "last.pt" in line and "train.keep" in line
    assert "not found" in one_line_error(cli(trained, "eval", "no_such_run-20260101T000000Z-0000"))
    assert "run id" in one_line_error(cli(trained, "eval", "../etc"))


# ---------------------------------------------------------------------------
# what the run wrote as it went: test_top5, summary.csv, TensorBoard hparams


def test_epochs_report_top5_and_summary_csv_has_timms_columns(trained):
    epochs = [e for e in trained["events"] if e["type"] == "epoch"]
    assert [e["epoch"] for e in epochs] == [1, 2]
    for e in epochs:
        assert 0 <= e["test_acc"] <= e["test_top5"] <= 100
    with (trained["run_dir"] / "summary.csv").open() as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == ["epoch", "train_loss", "eval_loss", "eval_top1", "eval_top5", "lr"]
        rows = list(reader)
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for row, e in zip(rows, epochs):
        assert float(row["eval_top1"]) == e["test_acc"] and float(row["eval_top5"]) == e["test_top5"]
        assert float(row["train_loss"]) == e["train_loss"] and float(row["eval_loss"]) == e["test_loss"]
        assert float(row["lr"]) == e["lr"]
    db = sqlite3.connect(trained["home"] / "cifar_tui.db")
    assert [r[0] for r in db.execute("SELECT test_top5 FROM epochs ORDER BY epoch")] == [e["test_top5"] for e in epochs]


def test_tensorboard_gets_the_hyperparameters(trained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    acc = EventAccumulator(str(trained["run_dir"] / "tb"))
    acc.Reload()
    content = acc.PluginTagToContent("hparams")
    start = HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["optim.lr"].number_value == pytest.approx(1e-3)
    assert start.hparams["model.backbone"].string_value == "test_resnet"  # the run's (tests/conftest.py TINY)
    assert start.hparams["data.normalize"].string_value == "cifar100"
    metrics = {m.name.tag for m in HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment.metric_infos}
    assert {"hparam/best_acc", "test/top5"} <= metrics
    assert HParamsPluginData.FromString(content["_hparams_/session_end_info"]).session_end_info.status == 1  # success
    scalars = acc.Tags()["scalars"]
    assert {"hparam/best_acc", "test/top5", "test/acc"} <= set(scalars)
    assert acc.Scalars("hparam/best_acc")[-1].value == pytest.approx(trained["end"]["best_acc"])


# ---------------------------------------------------------------------------
# predict


def reference_probs(run_dir: Path, images: np.ndarray) -> np.ndarray:
    """What the model says about uint8 (N, 3, 32, 32) images, preprocessed by hand: / 255, then
    CIFAR-100 mean/std (the run's data.normalize), at the run's 32x32."""
    from engine.checkpoint import load_checkpoint
    from engine.config import ModelConfig, read_config_file
    from engine.models import build_model

    backbone = read_config_file(run_dir / "config.yaml")["model"]["backbone"]  # the run's model, nothing else of it
    model = build_model(ModelConfig(backbone=backbone))
    model.load_state_dict(load_checkpoint(run_dir / "checkpoints" / "best.pt")["model"])
    model.train(False)
    x = torch.from_numpy(images).float() / 255.0
    x = (x - torch.tensor(CIFAR100_MEAN).view(1, 3, 1, 1)) / torch.tensor(CIFAR100_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        return torch.softmax(model(x), dim=1).numpy()


def hwc(chw: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(chw.transpose(1, 2, 0))


def test_predict_on_png_and_jpeg_files_of_any_size_and_grayscale(trained, tmp_path):
    test = trained["test"].images
    small, large, gray, jpeg, photo = (tmp_path / n for n in ("small.png", "large.png", "gray.png", "img.jpg", "photo.jpeg"))
    Image.fromarray(hwc(test[0])).save(small)
    Image.fromarray(hwc(test[0]).repeat(4, axis=0).repeat(4, axis=1)).save(large)  # 128x128, each pixel 4x4
    luminance = Image.fromarray(hwc(test[1])).convert("L")
    luminance.save(gray)
    Image.fromarray(hwc(test[2])).save(jpeg, quality=90)
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (75, 140, 3), dtype=np.uint8)).save(photo)
    lines = cli(trained, "predict", trained["run_id"], *map(str, (small, large, gray, jpeg, photo)), "--json")
    assert lines.returncode == 0, lines.stderr
    results = [json.loads(line) for line in lines.stdout.splitlines()]
    assert [r["image"] for r in results] == [str(p) for p in (small, large, gray, jpeg, photo)]
    for r in results:
        probs = [c["prob"] for c in r["top"]]
        assert len(r["top"]) == 5 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
        assert all(c["name"] == CIFAR100_CLASSES[c["index"]] for c in r["top"])

    gray_chw = np.repeat(np.asarray(luminance)[None], 3, axis=0)
    with Image.open(jpeg) as im:
        jpeg_chw = np.asarray(im.convert("RGB")).transpose(2, 0, 1)
    expected = reference_probs(trained["run_dir"], np.stack([test[0], test[0], gray_chw, jpeg_chw]))
    for r, want in zip(results, expected):
        got = [c["index"] for c in r["top"]]
        assert [c["prob"] for c in r["top"]] == pytest.approx(want[got].tolist(), abs=1e-5)
        assert want[got].min() >= np.sort(want)[-5] - 1e-5  # the five most likely classes (up to float ties)

    text = cli(trained, "predict", trained["run_id"], str(small))
    assert text.returncode == 0 and str(small) in text.stdout and results[0]["top"][0]["name"] in text.stdout


def test_predict_refuses_an_unreadable_file_with_one_line(trained, tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(hwc(trained["test"].images[0])).save(good)
    not_image = tmp_path / "notes.png"
    not_image.write_text("this is not a picture\n")
    truncated = tmp_path / "cut.jpg"
    Image.fromarray(np.full((64, 64, 3), 128, dtype=np.uint8)).save(tmp_path / "whole.jpg")
    truncated.write_bytes((tmp_path / "whole.jpg").read_bytes()[:300])
    for bad, what in ((not_image, "not an image"), (truncated, "damaged or truncated"), (tmp_path / "missing.png", "not found"),
                      (tmp_path, "not a file")):
        res = cli(trained, "predict", trained["run_id"], str(good), str(bad))
        line = one_line_error(res)
        assert str(bad) in line and what in line, line
        assert res.stdout == ""  # nothing predicted for the good file either


# ---------------------------------------------------------------------------
# export

# Runs the exported files where cifar-tui, the engine and timm cannot be imported.
LOAD_WITHOUT_CIFAR_TUI = r"""
import importlib.abc, json, sys
class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("cifar_tui", "engine", "timm", "tests"):
            raise ImportError(f"{name} is blocked: the exported model must run without it")
sys.meta_path.insert(0, Blocked())
import numpy as np
onnx_file, ts_file, inputs, out = sys.argv[1:5]
x = np.load(inputs)
import onnxruntime
session = onnxruntime.InferenceSession(onnx_file, providers=["CPUExecutionProvider"])
name = session.get_inputs()[0].name
onnx_logits = session.run(None, {name: x})[0]
import torch
module = torch.jit.load(ts_file)
with torch.no_grad():
    ts_logits = module(torch.from_numpy(x)).numpy()
np.savez(out, onnx=onnx_logits, ts=ts_logits)
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("cifar_tui", "engine", "timm"))))
"""


def test_export_onnx_and_torchscript_pass_parity_and_run_without_cifar_tui(trained, tmp_path):
    onnx = run_json(trained, "export", trained["run_id"], "--format", "onnx")
    ts_out = tmp_path / "model.ts"
    ts = run_json(trained, "export", trained["run_id"], "--format", "torchscript", "--out", str(ts_out))
    assert Path(onnx["path"]) == trained["run_dir"] / "export" / f"{trained['run_id']}.onnx"
    assert Path(ts["path"]) == ts_out
    for result in (onnx, ts):
        parity = result["parity"]
        assert parity["ok"] and parity["max_abs_diff"] <= 1e-3 and parity["images"] == 64
        sidecar = json.loads(Path(result["sidecar"]).read_text())
        assert sidecar["classes"] == list(CIFAR100_CLASSES)
        assert sidecar["input"]["shape"] == ["N", 3, 32, 32] and sidecar["input"]["normalize"] == "cifar100"
        assert sidecar["input"]["mean"] == list(CIFAR100_MEAN) and sidecar["input"]["std"] == list(CIFAR100_STD)
        assert sidecar["parity"]["max_abs_diff"] == parity["max_abs_diff"]

    # the sidecar is enough to feed the model: 7 test images preprocessed from it alone
    sidecar = json.loads(Path(onnx["sidecar"]).read_text())["input"]
    x = trained["test"].images[:7].astype(np.float32) / 255.0
    x = ((x - np.array(sidecar["mean"], dtype=np.float32)[:, None, None]) / np.array(sidecar["std"], dtype=np.float32)[:, None, None])
    inputs, out = tmp_path / "x.npy", tmp_path / "logits.npz"
    np.save(inputs, x.astype(np.float32))
    env = {k: v for k, v in trained["env"].items() if k != "PYTHONPATH"}
    res = subprocess.run([sys.executable, "-c", LOAD_WITHOUT_CIFAR_TUI, onnx["path"], str(ts_out), str(inputs), str(out)],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout.splitlines()[-1]) == []
    got = np.load(out)
    expected = np.log(reference_probs(trained["run_dir"], trained["test"].images[:7]))  # log-softmax of the logits
    for logits in (got["onnx"], got["ts"]):
        assert logits.shape == (7, 100)
        log_probs = logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True)) - logits.max(1, keepdims=True)
        np.testing.assert_allclose(log_probs, expected, atol=1e-4)


def test_export_refusals_are_one_line(trained, tmp_path):
    line = one_line_error(cli(trained, "export", trained["run_id"], "--format", "onnx", "--out", str(tmp_path / "no" / "m.onnx")))
    assert "does not exist" in line and str(tmp_path / "no") in line
    assert "--format" in cli(trained, "export", trained["run_id"], "--format", "tflite").stderr
