"""After training, in-process: the evaluation metrics and ensembles, summary.csv, the disk rule's
file handling, reading image files, and the store's evaluation rows."""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine.checkpoint import load_checkpoint, save_checkpoint
from engine.config import ConfigError, ExperimentConfig, load_config
from engine.after.evaluate import Predictions, compute_metrics, ensemble, topk_hits, worst_classes
from engine.after.images import ImageError, read_image
from engine.keep import check_extendable, check_resumable, checkpoint_path, finalize, save_epoch_weights
from engine.record.rebuild import rebuild_store
from engine.record.store import Store
from engine.summary import SUMMARY_COLUMNS, flat_hparams, read_summary, write_summary_row

# ---------------------------------------------------------------------------
# metrics


def _preds(rows: list[list[float]], labels: list[int]) -> Predictions:
    return Predictions(torch.tensor(rows, dtype=torch.float32), torch.tensor(labels))


def test_metrics_top1_top5_per_class_and_confusion():
    classes = [f"c{i}" for i in range(6)]
    # 6 classes, 2 images each: image 2k is right, image 2k+1 is taken for class k+1 (k=5 -> 0)
    rows, labels = [], []
    for k in range(6):
        right = [0.01] * 6
        right[k] = 0.95
        wrong = [0.01] * 6
        wrong[(k + 1) % 6] = 0.6
        wrong[k] = 0.3 if k < 3 else 0.0  # top-5 of 6: the true class is 2nd (k < 3) or last (k >= 3)
        rows += [right, wrong]
        labels += [k, k]
    m = compute_metrics(_preds(rows, labels), classes)
    assert m.n == 12 and m.top1 == pytest.approx(50.0) and m.top5 == pytest.approx(75.0)
    assert [r["accuracy"] for r in m.per_class] == [50.0] * 6 and [r["count"] for r in m.per_class] == [2] * 6
    assert np.mean([r["accuracy"] for r in m.per_class]) == pytest.approx(m.top1)
    assert m.confusion.sum(1).tolist() == [2] * 6 and np.trace(m.confusion) == 6
    assert m.confusion[0, 1] == m.confusion[5, 0] == 1
    assert {(c["true"], c["predicted"]) for c in m.confused} == {(f"c{k}", f"c{(k + 1) % 6}") for k in range(6)}
    assert all(c["count"] == 1 and c["share"] == 50.0 for c in m.confused)
    assert m.loss == pytest.approx(-(6 * np.log(0.95) + 3 * np.log(0.3) + 3 * np.log(1e-12)) / 12, rel=1e-5)


def test_a_class_without_test_images_has_no_accuracy_and_is_not_among_the_worst():
    m = compute_metrics(_preds([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0]], [0, 0]), ["a", "b", "c"])
    assert [r["accuracy"] for r in m.per_class] == [50.0, None, None]
    assert [r["name"] for r in worst_classes(m.per_class)] == ["a"]
    with pytest.raises(ConfigError, match="3 classes but the data set names 2"):
        compute_metrics(_preds([[0.9, 0.1, 0.0]], [0]), ["a", "b"])


def test_ensemble_is_the_mean_of_the_members_probabilities():
    a = _preds([[0.6, 0.4], [0.1, 0.9]], [0, 0])
    b = _preds([[0.2, 0.8], [0.7, 0.3]], [0, 0])
    both = ensemble([a, b])
    torch.testing.assert_close(both.probs, torch.tensor([[0.4, 0.6], [0.4, 0.6]]))
    assert compute_metrics(both, ["x", "y"]).top1 == 0.0  # each member alone gets one of two right
    assert ensemble([a, a]).probs.equal(a.probs)
    with pytest.raises(ConfigError, match="different test sets"):
        ensemble([a, _preds([[0.6, 0.4], [0.1, 0.9]], [0, 1])])


def test_topk_hits_counts_top1_and_top5():
    out = torch.tensor([[9.0, 8, 7, 6, 5, 4, 3], [1, 2, 3, 4, 5, 6, 7]])
    assert topk_hits(out, torch.tensor([0, 0])).tolist() == [1.0, 1.0]
    assert topk_hits(out, torch.tensor([4, 1])).tolist() == [0.0, 1.0]  # 5th of the first, 6th of the second
    assert topk_hits(out[:, :3], torch.tensor([2, 0])).tolist() == [0.0, 2.0]  # fewer than 5 classes: all of them


# ---------------------------------------------------------------------------
# summary.csv and hparams


def test_summary_csv_keeps_one_row_per_epoch_across_a_resume(tmp_path):
    for e in (1, 2, 3):
        write_summary_row(tmp_path, {"epoch": e, "train_loss": 1.0 / e, "test_loss": None if e == 2 else 2.0,
                                     "test_acc": 10.0 * e, "test_top5": 30.0 * e, "lr": 0.1})
    rows = read_summary(tmp_path)
    assert list(rows[0]) == list(SUMMARY_COLUMNS)
    assert [r["epoch"] for r in rows] == ["1", "2", "3"] and rows[1]["eval_loss"] == "" and rows[0]["train_loss"] == "1.0"
    write_summary_row(tmp_path, {"epoch": 2, "train_loss": 0.25, "test_loss": 1.5, "test_acc": 21.0, "test_top5": 61.0, "lr": 0.1})
    rows = read_summary(tmp_path)
    assert [(r["epoch"], r["eval_top1"]) for r in rows] == [("1", "10.0"), ("2", "21.0")]  # a resumed run repeats epoch 2
    with (tmp_path / "summary.csv").open("a") as f:
        f.write("3,0.1,0.2")  # torn by a crash
    assert len(read_summary(tmp_path)) == 2


def test_hparams_are_the_flattened_config_leaves():
    hp = flat_hparams(load_config("resnet18_baseline").to_dict())
    assert hp["optim.lr"] == 1e-3 and hp["model.backbone"] == "resnet18" and hp["train.keep"] == "best"
    assert hp["optim.betas"] == "[0.9, 0.999]" and hp["model.weights"] == "none" and hp["data.shuffle"] is False
    assert "description" not in hp and all(isinstance(v, (bool, int, float, str)) for v in hp.values())


# ---------------------------------------------------------------------------
# the disk rule (files)


def _fake_run(tmp_path: Path, *, best: bool = True, last: bool = True) -> Path:
    run_dir = tmp_path / "run"
    ckpt = run_dir / "checkpoints"
    ckpt.mkdir(parents=True)
    weights = {"w": torch.zeros(4)}
    if last:
        save_checkpoint({"model": weights, "optimizer": {"state": {}}, "epoch": 2, "step_in_epoch": 0}, ckpt / "last.pt")
    if best:
        save_checkpoint({"model": weights, "epoch": 2, "best_acc": 1.0}, ckpt / "best.pt")
    return run_dir


@pytest.mark.parametrize("keep, status, left", [
    ("best", "completed", ["best.pt"]),
    ("best+last", "completed", ["best.pt", "last.pt"]),
    ("all", "completed", ["best.pt", "last.pt"]),
    ("best", "stopped", ["best.pt", "last.pt"]),
    ("best", "failed", ["best.pt", "last.pt"]),
])
def test_finalize_drops_the_resume_state_of_a_completed_run_only(tmp_path, keep, status, left):
    run_dir = _fake_run(tmp_path)
    assert finalize(run_dir, keep, status) == left
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == left


def test_finalize_keeps_the_resume_state_when_best_is_missing_or_damaged(tmp_path, capsys):
    run_dir = _fake_run(tmp_path, best=False)
    assert finalize(run_dir, "best", "completed") == ["last.pt"]
    (run_dir / "checkpoints" / "best.pt").write_bytes(b"garbage")
    assert finalize(run_dir, "best", "completed") == ["best.pt", "last.pt"]
    assert "keeping" in capsys.readouterr().err


def test_keep_all_writes_each_epochs_weights_and_refusals_say_why(tmp_path):
    run_dir = _fake_run(tmp_path, last=False)
    state = {"run_id": "r", "config": {}, "model": {"w": torch.ones(2)}, "epoch": 3, "step_in_epoch": 0, "best_acc": 5.0}
    assert save_epoch_weights(run_dir, "best", state) is None
    assert save_epoch_weights(run_dir, "all", {**state, "step_in_epoch": 7}) is None  # a mid-epoch stop
    path = save_epoch_weights(run_dir, "all", state)
    assert path.name == "epoch_0003.pt" and load_checkpoint(path)["epoch"] == 3
    assert checkpoint_path(run_dir, "3") == path and checkpoint_path(run_dir, "best").name == "best.pt"
    with pytest.raises(ConfigError, match="no last.pt.*train.keep"):
        checkpoint_path(run_dir, "last")
    with pytest.raises(ConfigError, match="epoch 4.*train.keep: all"):
        checkpoint_path(run_dir, "4")
    with pytest.raises(ConfigError, match="expected best, last or an epoch"):
        checkpoint_path(run_dir, "newest")
    cfg = ExperimentConfig(name="x")
    with pytest.raises(ConfigError, match="cannot be extended.*train.keep=best\\+last"):
        check_extendable("r", run_dir, cfg, 2, 5)
    with pytest.raises(ConfigError, match="trained 2 epochs already"):
        check_extendable("r", run_dir, cfg, 2, 2)
    with pytest.raises(ConfigError, match="cannot be resumed"):
        check_resumable("r", run_dir)
    check_resumable("r", _fake_run(tmp_path / "other"))  # last.pt there: fine
    with pytest.raises(ConfigError, match="train.keep: Input should be 'best', 'best\\+last' or 'all'"):
        load_config("resnet18_baseline", ["train.keep=everything"])


# ---------------------------------------------------------------------------
# image files


def _img(rng, h, w, mode="RGB") -> Image.Image:
    if mode == "L":
        return Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8))
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def test_read_image_brings_any_image_to_32x32_rgb(tmp_path):
    rng = np.random.default_rng(0)
    base = _img(rng, 32, 32)
    base.save(tmp_path / "a.png")
    want = np.asarray(base).transpose(2, 0, 1)
    assert read_image(tmp_path / "a.png").tolist() == want.tolist()
    base.resize((96, 96), Image.Resampling.NEAREST).save(tmp_path / "big.bmp")  # each pixel 3x3: averaging gives it back
    assert read_image(tmp_path / "big.bmp").tolist() == want.tolist()
    gray = _img(rng, 50, 20, "L")
    gray.save(tmp_path / "g.png")
    g = read_image(tmp_path / "g.png")
    assert g.shape == (3, 32, 32) and g.dtype == np.uint8 and (g[0] == g[1]).all() and (g[1] == g[2]).all()
    deep = Image.fromarray(np.full((8, 8), 51400, dtype=np.uint16))  # 16-bit grayscale: 51400 >> 8 = 200
    deep.save(tmp_path / "deep.png")
    assert set(read_image(tmp_path / "deep.png").ravel().tolist()) == {200}
    base.convert("P").save(tmp_path / "p.gif")
    base.convert("RGBA").save(tmp_path / "rgba.png")
    base.save(tmp_path / "j.jpg", quality=95)
    for name in ("p.gif", "rgba.png", "j.jpg"):
        assert read_image(tmp_path / name).shape == (3, 32, 32)


def test_read_image_refuses_what_is_not_a_readable_image(tmp_path):
    (tmp_path / "t.png").write_text("text")
    _img(np.random.default_rng(1), 40, 40).save(tmp_path / "whole.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "whole.png").read_bytes()[:200])
    for path, what in ((tmp_path / "t.png", "not an image"), (tmp_path / "cut.png", "damaged or truncated"),
                       (tmp_path / "none.png", "not found"), (tmp_path, "not a file")):
        with pytest.raises(ImageError) as exc:
            read_image(path)
        assert str(exc.value).startswith(f"{path}: ") and what in str(exc.value) and "\n" not in str(exc.value)


# ---------------------------------------------------------------------------
# the store


def test_store_keeps_evaluations_rebuilds_them_and_forgets_a_deleted_run(tmp_path):
    store = Store(tmp_path)
    result = {"run_id": "r1", "ckpt": "best", "tta": "none", "data_source": "synthetic", "n": 10, "top1": 50.0,
              "top5": 90.0, "loss": 1.2, "per_class": [{"name": "a", "accuracy": 50.0}]}
    store.eval_recorded("r1", ["r1"], result)
    store.eval_recorded("r1", ["r1"], {**result, "top1": 60.0})  # the latest result per (run, ckpt, tta)
    store.eval_recorded("ensemble-x", ["r1", "r2"], {**result, "run_id": "ensemble-x", "top1": 70.0})
    assert [(r["key"], r["top1"]) for r in store.evals("r1")] == [("ensemble-x", 70.0), ("r1", 60.0)]
    assert store.evals("r2")[0]["members"] == ["r1", "r2"]
    assert store.eval_result("r1")["per_class"] == result["per_class"] and store.eval_result("r1", tta="flip") is None
    store.delete_run("r1")
    assert [r["key"] for r in store.evals()] == ["ensemble-x"]
    store.close()

    # the run dirs are the durable record: a new store finds the results in runs/<id>/eval/*.json
    home = tmp_path / "home"
    (home / "r3" / "eval").mkdir(parents=True)
    (home / "r3" / "eval" / "best.json").write_text(json.dumps({**result, "run_id": "r3"}))
    (home / "r3" / "eval" / "junk.json").write_text("{not json")
    store = Store(home)
    rebuild_store(store)
    assert [(r["key"], r["members"], r["top1"]) for r in store.evals()] == [("r3", ["r3"], 50.0)]
    store.close()


def test_an_older_store_gets_the_top5_column(tmp_path):
    old = sqlite3.connect(tmp_path / "cifar_tui.db")
    old.executescript("""CREATE TABLE epochs (run_id TEXT NOT NULL, epoch INTEGER NOT NULL, train_loss REAL,
        train_acc REAL, test_loss REAL, test_acc REAL, lr REAL, epoch_s REAL, t REAL, PRIMARY KEY (run_id, epoch));
        INSERT INTO epochs (run_id, epoch, test_acc) VALUES ('old', 1, 5.0);""")
    old.commit()
    old.close()
    store = Store(tmp_path)
    store.epoch_done("new", {"epoch": 1, "test_acc": 7.0, "test_top5": 21.0}, 1.0)
    assert [(r["run_id"], r["test_top5"]) for r in (store.epochs("old") + store.epochs("new"))] == [("old", None), ("new", 21.0)]
    store.close()
