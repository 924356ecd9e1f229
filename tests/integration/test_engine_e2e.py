"""The real engine, end to end through the installed CLI, on tiny synthetic data."""
from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
import torch

from engine.checkpoint import load_checkpoint
from engine.events import read_events

from tests.conftest import CLI, cli, set_args, tiny_overrides
from tests.support.checkpoints import assert_same_training_state, epoch_metrics

EVENT_FIELDS = {
    "start": {"config_name", "config", "device", "data_source", "params", "flops", "pid", "resumed_from"},
    "step": {"epoch", "step", "steps_per_epoch", "loss", "acc", "lr", "img_per_s"},
    "epoch": {"epoch", "train_loss", "train_acc", "test_loss", "test_acc", "best_acc", "best_epoch", "epoch_s"},
    "checkpoint": {"path", "epoch", "is_best"},
    "end": {"status", "error", "best_acc"},
}


def only_run_dir(home: Path) -> Path:
    dirs = [d for d in home.iterdir() if d.is_dir()]
    assert len(dirs) == 1, dirs
    return dirs[0]


@pytest.mark.cold_engine  # the real `cifar-tui run`, start-up included, with the config's own model
def test_run_end_to_end_writes_events_checkpoints_store_and_leaderboard(workspace):
    res = cli(workspace, "run", "resnet18_baseline", *set_args(tiny_overrides(model__backbone="resnet18")))
    assert res.returncode == 0, res.stderr + res.stdout
    run_dir = only_run_dir(workspace["home"])
    assert run_dir.name.startswith("resnet18_baseline-")
    assert str(run_dir.name) in res.stdout and "completed" in res.stdout

    events = read_events(run_dir / "events.jsonl")
    kinds = [e["type"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "end"
    assert kinds.count("epoch") == 2
    for e in events:
        assert e["v"] == 1 and e["run_id"] == run_dir.name and isinstance(e["t"], float)
        assert EVENT_FIELDS.get(e["type"], set()) <= e.keys(), e
    times = [e["t"] for e in events]
    assert times == sorted(times)
    start, end = events[0], events[-1]
    assert start["data_source"] == "synthetic" and start["device"] == "cpu" and start["params"] > 10_000_000
    assert start["flops"] > 0 and start["resumed_from"] is None
    assert end["status"] == "completed" and end["best_acc"] is not None
    epochs = [e for e in events if e["type"] == "epoch"]
    assert [e["epoch"] for e in epochs] == [1, 2]
    assert end["best_acc"] == max(e["test_acc"] for e in epochs)

    assert (run_dir / "config.yaml").is_file() and (run_dir / "stdout.log").is_file()
    # a completed run keeps its best weights only (train.keep: best); the resume state is dropped
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best.pt"] == end["checkpoints"]
    best = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    assert best["epoch"] == end["best_epoch"] and best["best_acc"] == end["best_acc"] and "optimizer" not in best
    assert list((run_dir / "tb").glob("events.out.tfevents.*")), "TensorBoard scalars missing"

    db = sqlite3.connect(workspace["home"] / "cifar_tui.db")
    row = db.execute("SELECT status, best_acc, epochs_done, data_source FROM runs WHERE run_id=?", (run_dir.name,)).fetchone()
    assert row == ("completed", end["best_acc"], 2, "synthetic")
    assert db.execute("SELECT COUNT(*) FROM epochs WHERE run_id=?", (run_dir.name,)).fetchone()[0] == 2

    board = cli(workspace, "leaderboard", "--format", "json")
    rows = json.loads(board.stdout)
    assert [r["run_id"] for r in rows] == [run_dir.name]
    assert rows[0]["best_acc"] == pytest.approx(end["best_acc"]) and rows[0]["data"] == "synthetic"
    assert rows[0]["reference"] is None  # a synthetic result is never compared with the seed's CIFAR-100 figure
    md = cli(workspace, "leaderboard", "--format", "markdown").stdout
    assert "Synthetic data" in md and "resnet18_baseline.yaml" in md
    listing = cli(workspace, "runs").stdout
    assert run_dir.name[:20] in listing and "completed" in listing


def test_json_mode_prints_events(workspace):
    res = cli(workspace, "run", "resnet18_baseline", "--json", "--epochs", "1", *set_args(tiny_overrides()))
    assert res.returncode == 0, res.stderr
    lines = [json.loads(line) for line in res.stdout.splitlines()]
    assert lines[0]["type"] == "start" and lines[-1]["type"] == "end" and lines[-1]["status"] == "completed"


def test_database_is_rebuilt_from_run_dirs(workspace):
    assert cli(workspace, "run", "resnet18_baseline", "--epochs", "1", *set_args(tiny_overrides())).returncode == 0
    (workspace["home"] / "cifar_tui.db").unlink()
    for suffix in ("-wal", "-shm"):
        (workspace["home"] / f"cifar_tui.db{suffix}").unlink(missing_ok=True)
    rows = json.loads(cli(workspace, "leaderboard", "--format", "json").stdout)
    assert len(rows) == 1 and rows[0]["status"] == "completed"


def test_a_store_from_before_the_process_count_keeps_its_queue(tmp_path):
    """A queue written before DDP runs could be queued (no nproc column) opens and upgrades in place."""
    from engine.store import Store

    old = sqlite3.connect(tmp_path / "cifar_tui.db")
    old.executescript("""CREATE TABLE queue (id INTEGER PRIMARY KEY AUTOINCREMENT, config TEXT NOT NULL,
        overrides TEXT NOT NULL DEFAULT '[]', created_at REAL NOT NULL, state TEXT NOT NULL DEFAULT 'queued',
        run_id TEXT);
        INSERT INTO queue (config, overrides, created_at) VALUES ('resnet18_baseline', '["train.epochs=2"]', 1.0);""")
    old.commit()
    old.close()
    store = Store(tmp_path)
    try:
        store.enqueue("resnet18_pretrained", [], nproc=2)
        assert [(q["config"], q["overrides"], q["nproc"]) for q in store.queued()] == [
            ("resnet18_baseline", ["train.epochs=2"], 1), ("resnet18_pretrained", [], 2)]
    finally:
        store.close()
    Store(tmp_path).close()  # opening an upgraded store again changes nothing


def _start_engine(workspace, *args: str) -> subprocess.Popen:
    return subprocess.Popen([*CLI, *args], env=workspace["env"], cwd=workspace["tmp"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_for_step(home: Path, timeout: float = 120) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for d in home.glob("*/events.jsonl"):
            if any(e["type"] == "step" for e in read_events(d)):
                return d.parent
        time.sleep(0.05)
    raise AssertionError("no step event")


def test_ctrl_c_leaves_a_resumable_run_that_matches_an_uninterrupted_one(workspace, tmp_path):
    """Ctrl-C part-way through an epoch: exit 130, a `stopped` end, and a checkpoint of exactly
    that step; `cifar-tui resume` continues from it and ends bit for bit as a run never stopped:
    the same epoch metrics exactly, and the same weights, optimizer, scheduler, EMA and RNG states."""
    one_thread = {"OMP_NUM_THREADS": "1"}  # the same float sums in both runs
    workspace["env"].update(one_thread)
    # timm's small test_resnet, 64 steps an epoch: the stop lands inside one
    overrides = tiny_overrides(data__train_limit=1024, train__batch_size=16,
                               data__augment="crop_flip", data__shuffle="true", schedule__name="cosine",
                               train__keep="best+last", train__ema__decay=0.9,
                               model__drop_rate=0.2)  # dropout draws from the global RNG: its state must resume
    reference = dict(workspace, home=tmp_path / "reference")  # the uninterrupted run, on the other core meanwhile
    reference["env"] = dict(workspace["env"], CIFAR_TUI_HOME=str(reference["home"]))
    uninterrupted = _start_engine(reference, "run", "resnet18_baseline", *set_args(overrides))
    proc = _start_engine(workspace, "run", "resnet18_baseline", *set_args(overrides))
    run_dir = _wait_for_step(workspace["home"])
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    evs = read_events(run_dir / "events.jsonl")
    end, steps_per_epoch = evs[-1], evs[0]["steps_per_epoch"]
    assert end["type"] == "end" and end["status"] == "stopped"
    last = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert 0 < last["step_in_epoch"] < steps_per_epoch, f"stopped at step {last['step_in_epoch']} of {steps_per_epoch}"
    assert last["global_step"] == last["epoch"] * steps_per_epoch + last["step_in_epoch"]
    saved = [e for e in evs if e["type"] == "checkpoint"][-1]
    assert (saved["epoch"], saved["step"]) == (last["epoch"], last["step_in_epoch"]) and end["epochs_done"] == last["epoch"]
    assert "cifar-tui resume" in out + err

    res = cli(workspace, "resume", run_dir.name)
    assert res.returncode == 0, res.stderr
    starts = [e for e in read_events(run_dir / "events.jsonl") if e["type"] == "start"]
    assert starts[-1]["resumed_from"] == {"epoch": last["epoch"], "step": last["step_in_epoch"]}

    ref_out, ref_err = uninterrupted.communicate(timeout=300)
    assert uninterrupted.returncode == 0, ref_err
    ref_dir = only_run_dir(reference["home"])
    # same epochs, the same metrics exactly: CPU with a fixed seed and one thread is deterministic
    assert [e[0] for e in epoch_metrics(run_dir)] == [1, 2]
    assert epoch_metrics(run_dir) == epoch_metrics(ref_dir)
    assert read_events(run_dir / "events.jsonl")[-1]["weights_sha256"] == read_events(ref_dir / "events.jsonl")[-1]["weights_sha256"]
    # and the whole training state: weights, optimizer moments, scheduler, EMA, RNGs, loop position
    a = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    b = load_checkpoint(ref_dir / "checkpoints" / "last.pt")
    assert "ema" in a
    assert_same_training_state(a, b)


def test_stop_command_stops_a_run_started_elsewhere(workspace):
    proc = _start_engine(workspace, "run", "resnet18_baseline",
                         *set_args(tiny_overrides(train__epochs=50, train__batch_size=16)))
    run_dir = _wait_for_step(workspace["home"])
    res = cli(workspace, "stop", run_dir.name)
    assert res.returncode == 0, res.stderr
    proc.communicate(timeout=60)
    assert read_events(run_dir / "events.jsonl")[-1]["status"] == "stopped"
    runs = [json.loads(line) for line in cli(workspace, "runs", "--json").stdout.splitlines()]
    assert runs[0]["status"] == "stopped"
    assert cli(workspace, "stop", run_dir.name).returncode == 2  # not running any more


def test_learnable_synthetic_data_beats_chance_fivefold(workspace):
    res = cli(workspace, "run", "resnet18_baseline", "--json",
              *set_args(tiny_overrides(data__train_limit=1000, data__test_limit=500, train__epochs=2,
                                       train__batch_size=50, data__shuffle="true")))
    assert res.returncode == 0, res.stderr
    end = json.loads(res.stdout.splitlines()[-1])
    assert end["best_acc"] >= 5.0, f"best test accuracy {end['best_acc']}% (chance is 1%)"


@pytest.mark.parametrize("args, fragment", [
    (["run", "no_such_experiment"], "unknown experiment 'no_such_experiment'"),
    (["run", "resnet18_baseline", "--set", "train.epochs=-1"], "train.epochs"),
    (["run", "resnet18_baseline", "--set", "model.backbone=resnet19", "--data", "synthetic", "--device", "cpu"],
     "model.backbone: unknown timm model 'resnet19'"),
    (["run", "resnet18_baseline", "--set", "train.batch_size=many"], "train.batch_size"),
    (["run", "resnet18_baseline", "--set", "nope.x=1"], "nope: unknown key"),
    (["run", "resnet18_baseline", "--device", "tpu"], "train.device"),
    (["show", "../../etc/passwd"], "config file not found"),
    (["resume", "../x"], "run id"),
    (["run", "resnet18_baseline", "--data", "cifar100", "--device", "cpu"], "cifar-tui data download"),
])
def test_bad_input_exits_2_with_one_line_and_no_traceback(workspace, args, fragment):
    res = cli(workspace, *args)
    assert res.returncode == 2, res.stdout + res.stderr
    assert fragment in res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    home = workspace["home"]
    assert not home.exists() or not [d for d in home.iterdir() if d.is_dir()], "a refused run left a run dir"


def test_bad_yaml_file_exits_2(workspace):
    bad = workspace["tmp"] / "bad.yaml"
    bad.write_text("name: x\ntrain: [unclosed\n")
    res = cli(workspace, "run", str(bad))
    assert res.returncode == 2 and "invalid YAML" in res.stderr and str(bad) in res.stderr


def test_kd_without_a_finished_teacher_says_what_to_train(workspace, tmp_path):
    weights = tmp_path / "r18.pth"
    import timm

    torch.save(timm.create_model("resnet18").state_dict(), weights)
    res = cli(workspace, "run", "resnet18_pretrained_arcface_kd",
              *set_args(tiny_overrides(model__weights=weights, model__backbone="resnet18")))
    assert res.returncode == 2
    assert "cifar-tui run resnet50_pretrained_arcface_224x224" in res.stderr


def test_list_shows_every_experiment_with_reference(workspace):
    """Every config file in configs/, once, in name order, each with its config's reference accuracy."""
    from engine.config import list_config_paths, load_config

    res = cli(workspace, "list", "--json")
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    paths = list_config_paths()
    assert [r["name"] for r in rows] == [p.stem for p in paths] and len(paths) >= 12
    for row, path in zip(rows, paths):
        cfg = load_config(path.stem)
        ref = cfg.reference
        assert row["error"] is None and row["ref_acc"] == ref.accuracy, row["name"]
        assert row["ref_kind"] == (ref.kind if ref.accuracy is not None else None), row["name"]
        sizes = "/".join(map(str, cfg.data.train_sizes)) or str(cfg.data.image_size)  # multi-scale: every size
        assert row["input"] == sizes and row["pretrained"] == cfg.model.pretrained, row["name"]
    by_name = {r["name"]: r for r in rows}
    assert by_name["resnet18_baseline"]["ref_acc"] == 44.26 and by_name["resnet18_baseline"]["ref_kind"] == "seed"
    assert by_name["resnet50_pretrained_arcface_224x224"]["input"] == "224"


def _kd_first_step_loss(student_cfg, home: Path, data_root: Path, teacher_dir: Path, teacher_state: dict) -> dict:
    """The loss of the student's first step, computed here from the teacher's weights `teacher_state`:
    the student's initial weights and first batch are the engine's own (a Trainer set up in this
    process, seeded as the engine is); the teacher, the margins and the KD formula are this test's."""
    import torch.nn.functional as F

    from engine.config import config_from_dict, read_config_file
    from engine.losses import arcface_logits
    from engine.models import build_model
    from engine.trainer import Trainer

    deterministic = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        trainer = Trainer(student_cfg, run_id="probe", home=home, data_root=data_root)
        trainer.prepare()
        x, y = next(iter(trainer.pipeline.train_batches(0, student_cfg.train.seed, student_cfg.train.batch_size)))
        loss_cfg = student_cfg.loss
        with torch.no_grad():
            trainer.model.train()
            student = arcface_logits(trainer.model(x), y, loss_cfg.s, loss_cfg.m).float()
            teacher_cfg = config_from_dict(read_config_file(teacher_dir / "config.yaml"))
            teacher = build_model(teacher_cfg.model.model_copy(update={"pretrained": False, "weights": None}))
            teacher.load_state_dict(teacher_state)
            teacher.train()  # loss.kd.teacher_mode: train: BatchNorm on the batch's own statistics
            for module in teacher.modules():
                if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                    module.track_running_stats = False
            size = teacher_cfg.data.image_size
            t_out = teacher(F.interpolate(x.contiguous(), size=(size, size), mode="bilinear", align_corners=False))
            t_logits = arcface_logits(t_out, y, teacher_cfg.loss.s, teacher_cfg.loss.m).float()
        kd = loss_cfg.kd
        T = kd.temperature
        kl = (F.softmax(t_logits / T, 1) * (F.log_softmax(t_logits / T, 1) - F.log_softmax(student / T, 1))).sum(1).mean()
        ce = F.cross_entropy(student, y)
        return {"kd": float(kd.alpha * kl * T * T + (1 - kd.alpha) * ce), "ce": float(ce)}
    finally:
        torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])


def test_knowledge_distillation_uses_a_finished_teacher_run(workspace, tmp_path):
    """The student's first step (a single one: the whole training set is one batch) has the loss
    0.7 * KL(T=4) * T^2 + 0.3 * CE against the teacher run's best.pt; not CE alone, nor the KD
    loss against the teacher's starting weights."""
    import timm

    from engine.config import load_config

    weights = tmp_path / "test_resnet.pth"
    torch.save(timm.create_model("test_resnet").state_dict(), weights)
    # a small stand-in teacher: the named config, shrunk (timm's test_resnet at 64x64) to fit a CPU test
    teacher = cli(workspace, "run", "resnet50_pretrained_arcface_224x224", "--epochs", "1",
                  *set_args(tiny_overrides(model__weights=weights, data__image_size=64)))
    assert teacher.returncode == 0, teacher.stderr
    student_overrides = tiny_overrides(model__weights=weights, train__epochs=1, data__train_limit=64,
                                       train__batch_size=64)
    student = cli(workspace, "run", "resnet18_pretrained_arcface_kd", "--json", *set_args(student_overrides))
    assert student.returncode == 0, student.stderr
    events = [json.loads(line) for line in student.stdout.splitlines()]
    assert events[-1]["status"] == "completed"
    assert events[0]["config"]["loss"]["kd"]["teacher"] == "resnet50_pretrained_arcface_224x224"
    (epoch,) = [e for e in events if e["type"] == "epoch"]
    assert events[0]["steps_per_epoch"] == 1  # so the epoch's train loss is the first step's

    teacher_dir = next(d for d in workspace["home"].iterdir() if d.name.startswith("resnet50_pretrained_arcface_224x224-"))
    best = load_checkpoint(teacher_dir / "checkpoints" / "best.pt")
    cfg = load_config("resnet18_pretrained_arcface_kd", student_overrides)
    expected = _kd_first_step_loss(cfg, workspace["home"], workspace["data"], teacher_dir, best["model"])
    assert epoch["train_loss"] == pytest.approx(expected["kd"], rel=1e-5)
    # and the check can tell: the loss without the teacher, or with the teacher it started from, is far off
    started_from = {f"backbone.{k}": v for k, v in torch.load(weights, weights_only=True).items() if not k.startswith("fc.")}
    assert started_from.keys() < best["model"].keys()
    start_state = {**best["model"], **started_from}
    for other in (expected["ce"], _kd_first_step_loss(cfg, workspace["home"], workspace["data"], teacher_dir,
                                                      start_state)["kd"]):
        assert abs(other - expected["kd"]) > 10 * 1e-5 * expected["kd"], (other, expected)


def test_pretrained_offline_without_weights_is_refused_fast(workspace):
    """The suite runs offline (tests/support/hygiene.py: HF_HUB_OFFLINE, empty HF_HOME/TORCH_HOME,
    a closed proxy), so this holds on a machine with internet access too. Fast: refused by the
    offline switch before any probe or hub call (no retries: tests/unit/test_suite_offline.py)."""
    res = subprocess.run([*CLI, "run", "resnet18_pretrained", "--data", "synthetic", "--device", "cpu", "--epochs", "1"],
                         env=workspace["env"], capture_output=True, text=True, timeout=120, cwd=workspace["tmp"])
    assert res.returncode == 2, res.stderr
    assert "resnet18" in res.stderr and "model.weights" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert "HF_HUB_OFFLINE" in res.stderr  # refused by the suite's offline switch, even where the hub is reachable
    assert not any(workspace["home"].glob("*/"))
