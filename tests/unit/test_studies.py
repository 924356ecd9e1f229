"""Group statistics (Student's t), group curves, study listing, provenance, stop requests, the
search space of `tune`: the plain functions a CLI and a TUI call."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cifar_tui.studies import group_curve, group_stats, list_studies, mean_interval, study_summary, t_quantile
from cifar_tui.tune import make_pruner, parse_param
from engine.record import provenance
from engine.config import ConfigError
from engine.stop_request import StopRequestWatcher, read_request, write_request
from engine.record.store import Store

# t_{0.975, df} from a printed table (two-sided 95%), independent of any library
T_TABLE = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
           15: 2.131, 20: 2.086, 25: 2.060, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980}


def test_students_t_quantiles_match_the_printed_table():
    for df, expected in T_TABLE.items():
        assert abs(t_quantile(0.95, df) - expected) < 6e-4, df
    assert abs(t_quantile(0.95, 100_000) - 1.960) < 1e-3
    assert abs(t_quantile(0.99, 4) - 4.604) < 1e-3


def test_mean_interval_of_a_few_numbers():
    values = [40.0, 42.0, 44.0, 46.0]
    stats = mean_interval(values)
    std = math.sqrt(sum((v - 43.0) ** 2 for v in values) / 3)
    half = 3.182 * std / 2
    assert stats["n"] == 4 and stats["mean"] == 43.0 and abs(stats["std"] - std) < 1e-12
    assert abs(stats["ci"][0] - (43.0 - half)) < 2e-3 and abs(stats["ci"][1] - (43.0 + half)) < 2e-3
    assert mean_interval([41.5]) == {"n": 1, "mean": 41.5, "std": None, "ci": None}
    assert mean_interval([])["mean"] is None


def _row(run_id, group, acc, *, status="completed", source="cifar100", ref=44.26, study="s", t=0.0, epochs=200,
         wall=100.0, config="resnet18_baseline"):
    return {"run_id": run_id, "group_key": group, "config_name": config, "best_acc": acc, "status": status,
            "data_source": source, "reference_acc": ref, "study": study, "started_at": t, "epochs_done": epochs,
            "wall_s": wall, "config_json": "{}"}


def test_group_stats_one_row_per_group_completed_runs_only_synthetic_apart():
    rows = [_row("a1", "g_a", 44.0, t=1), _row("a2", "g_a", 45.0, t=2), _row("a3", "g_a", 46.0, t=3),
            _row("a4", "g_a", 10.0, status="stopped", t=4), _row("b1", "g_b", 40.0, t=5), _row("b2", "g_b", 40.2, t=6),
            _row("s1", "g_s", 3.0, source="synthetic"), _row("s2", "g_s", 5.0, source="synthetic")]
    groups = group_stats(rows)
    assert [g["group"] for g in groups] == ["g_a", "g_b", "g_s"]  # CIFAR-100 by mean, then synthetic
    a, b, s = groups
    assert a["n"] == 3 and a["mean_acc"] == 45.0 and a["std_acc"] == 1.0
    half = 4.303 * 1.0 / math.sqrt(3)
    assert abs(a["ci95"][0] - (45 - half)) < 1e-3 and abs(a["ci95"][1] - (45 + half)) < 1e-3
    assert a["reference"] == 44.26 and a["ref_in_ci"] is True and a["diff"] == round(45 - 44.26, 4)
    assert a["runs"] == ["a1", "a2", "a3"] and a["unfinished"] == ["a4"] and a["studies"] == ["s"]
    assert a["epochs"] == "200" and a["wall_s"] == 100.0
    assert b["ref_in_ci"] is False  # 40.1 +- 12.706 * 0.1414 / 1.414 = [38.83, 41.37]: 44.26 outside
    assert s["reference"] is None and s["ref_in_ci"] is None and s["diff"] is None and s["n"] == 2


def test_runs_without_a_recorded_group_group_by_their_resolved_config_seed_left_out():
    cfg = {"name": "x", "train": {"seed": 0, "epochs": 3, "device": "cpu"}, "optim": {"lr": 0.1}}
    rows = []
    for i, (seed, lr) in enumerate([(0, 0.1), (1, 0.1), (0, 0.2)]):
        c = json.loads(json.dumps(cfg))
        c["train"]["seed"], c["optim"]["lr"] = seed, lr
        rows.append({**_row(f"r{i}", None, 40.0 + i), "config_json": json.dumps(c), "config_name": "x"})
    groups = group_stats(rows)
    assert sorted(g["n"] for g in groups) == [1, 2]
    assert all(g["group"].startswith("x #") for g in groups)


def _store_with_runs(tmp_path: Path) -> Store:
    store = Store(tmp_path / "runs")
    for i, (study, group, accs) in enumerate([("s1", "g1", [10.0, 20.0, 30.0]), ("s1", "g1", [12.0, 22.0]),
                                              ("s1", "g2", [5.0, 6.0, 7.0]), ("s2", "g3", [1.0])]):
        run_id = f"r{i}"
        store.run_started(run_id, config={"name": "resnet18_baseline", "data": {"source": "synthetic"}}, device="cpu",
                          pid=os.getpid(), run_dir=str(tmp_path / run_id), epochs_total=3, params=1, flops=None,
                          study=study, group=group)
        for ep, acc in enumerate(accs, start=1):
            store.epoch_done(run_id, {"epoch": ep, "test_acc": acc, "best_acc": max(accs[:ep]), "best_epoch": ep}, 1.0)
        store.run_ended(run_id, "completed", None, 3.0)
    store.save_study("s1", "sweep", "resnet18_baseline", {"seeds": 2})
    return store


def test_group_curve_is_the_mean_per_epoch_with_its_band(tmp_path):
    store = _store_with_runs(tmp_path)
    curve = group_curve(store, ["r0", "r1"])
    assert curve["epochs"] == [1, 2, 3] and curve["n"] == [2, 2, 1]
    assert curve["mean"] == [11.0, 21.0, 30.0]
    assert abs(curve["std"][0] - math.sqrt(2)) < 1e-12 and curve["std"][2] is None
    assert abs(curve["low"][0] - (11 - math.sqrt(2))) < 1e-12 and curve["low"][2] == curve["high"][2] == 30.0
    assert curve["runs"] == {"r0": [10.0, 20.0, 30.0], "r1": [12.0, 22.0, None]}
    store.close()


def test_studies_are_listed_with_their_runs_groups_and_best_run(tmp_path):
    store = _store_with_runs(tmp_path)
    found = {s["name"]: s for s in list_studies(store)}
    assert set(found) == {"s1", "s2"}
    s1 = found["s1"]
    assert s1["kind"] == "sweep" and s1["spec"] == {"seeds": 2} and s1["groups"] == 2
    assert s1["by_status"] == {"completed": 3} and s1["best_run"] == "r0" and s1["best_acc"] == 30.0
    assert found["s2"]["kind"] == "runs"  # only named on its runs (e.g. a rebuilt database)
    assert study_summary(store, "nope") is None
    store.close()


def test_a_rebuilt_database_keeps_each_runs_study_and_group(tmp_path):
    from engine.record.rebuild import ingest_run_dirs

    home = tmp_path / "runs"
    run_dir = home / "resnet18_baseline-20260101T000000Z-0a0a"
    run_dir.mkdir(parents=True)
    start = {"v": 1, "t": 1.0, "type": "start", "run_id": run_dir.name, "config_name": "resnet18_baseline",
             "config": {"name": "resnet18_baseline", "train": {"epochs": 1, "seed": 3}}, "data_source": "synthetic",
             "study": "s9", "group": "resnet18_baseline optim.lr=0.1", "provenance": {"git_commit": None}}
    end = {"v": 1, "t": 2.0, "type": "end", "run_id": run_dir.name, "status": "completed", "best_acc": 7.5}
    (run_dir / "events.jsonl").write_text(json.dumps(start) + "\n" + json.dumps(end) + "\n")
    store = Store(home)
    assert ingest_run_dirs(store).added == 1
    row = store.run(run_dir.name)
    assert (row["study"], row["group_key"], row["status"]) == ("s9", "resnet18_baseline optim.lr=0.1", "completed")
    assert [s["name"] for s in list_studies(store)] == ["s9"]
    store.close()


# ---------------------------------------------------------------- provenance


def _git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    return subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True, text=True, env=env).stdout


def test_provenance_in_a_git_checkout_clean_then_dirty_and_outside_one(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "a.py").write_text("x = 1\n")
    _git(repo, "add", "a.py")
    _git(repo, "commit", "-qm", "one")
    head = _git(repo, "rev-parse", "HEAD").strip()
    assert provenance.git_state(repo) == (head, False)
    (repo / "a.py").write_text("x = 2\n")
    assert provenance.git_state(repo) == (head, True)
    outside = tmp_path / "plain"
    outside.mkdir()
    assert provenance.git_state(outside) == (None, None)
    found = provenance.collect(["--config", "x"], root=outside)
    assert found["git_commit"] is None and found["git_dirty"] is None
    assert set(found["versions"]) == {"python", "torch", "timm", "albumentations", "cuda", "cudnn"}
    assert found["versions"]["python"] == ".".join(map(str, sys.version_info[:3]))
    assert found["versions"]["timm"] and found["versions"]["albumentations"].startswith("2.0")
    assert found["host"] and found["command"].endswith("-m engine.train --config x")
    assert isinstance(found["gpus"], list)


def test_provenance_names_the_batch_job_and_lists_differences():
    assert provenance.job_info({"SLURM_JOB_ID": "77", "SLURM_ARRAY_JOB_ID": "70", "SLURM_ARRAY_TASK_ID": "3"}) == \
        {"scheduler": "slurm", "job_id": "70_3"}
    assert provenance.job_info({"SUBMITIT_LOCAL_JOB_ID": "12"}) == {"scheduler": "submitit-local", "job_id": "12"}
    assert provenance.job_info({}) is None
    a = {"git_commit": "1", "versions": {"torch": "2.4", "timm": "1.0"}, "host": "h"}
    b = {"git_commit": "2", "versions": {"torch": "2.4", "timm": "1.1"}, "host": "h"}
    assert provenance.differences(a, b) == {"git_commit": ("1", "2"), "versions.timm": ("1.0", "1.1")}


# ---------------------------------------------------------------- stop requests


def test_a_stop_request_turns_a_stop_into_the_status_asked_for(tmp_path):
    watcher = StopRequestWatcher(tmp_path, poll_s=0.0)
    assert not watcher.requested() and watcher.end_status("stopped") == ("stopped", {})
    write_request(tmp_path, "pruned", "pruned at epoch 2")
    assert watcher.requested()
    assert watcher.end_status("stopped") == ("pruned", {"reason": "pruned at epoch 2"})
    assert watcher.end_status("completed") == ("completed", {})  # it finished before it noticed: exact
    watcher.clear()
    assert read_request(tmp_path) is None
    (tmp_path / "stop_request.json").write_text("{garbage")
    assert watcher.end_status("stopped") == ("stopped", {})  # unreadable: a plain stop
    with pytest.raises(ValueError):
        write_request(tmp_path, "completed")


def test_the_watcher_looks_at_the_file_at_most_once_per_poll_interval(tmp_path):
    watcher = StopRequestWatcher(tmp_path, poll_s=3600)
    assert not watcher.requested()
    write_request(tmp_path, "stopped")
    assert not watcher.requested()  # not looked again within the interval
    watcher._checked = time.monotonic() - 3601
    assert watcher.requested()


# ---------------------------------------------------------------- the search space


def test_tune_params_and_pruners_parse_or_say_what_is_expected():
    p = parse_param("optim.lr=log:1e-4:1e-1")
    assert (p.key, p.kind, p.low, p.high) == ("optim.lr", "log", 1e-4, 1e-1)
    assert p.ends() == ["optim.lr=0.0001", "optim.lr=0.1"] and p.override(0.5) == "optim.lr=0.5"
    assert parse_param("optim.name=choice:adamw,sgd").choices == ("adamw", "sgd")
    assert parse_param("train.batch_size=int:32:256").ends() == ["train.batch_size=32", "train.batch_size=256"]
    for bad, fragment in [("optim.lr=log:0:1", "LOW > 0"), ("optim.lr=log:1:0.1", "LOW must be below HIGH"),
                          ("optim.lr=1e-3", "expected KEY=log:LOW:HIGH"), ("optim.lr=float:a:b", "expected"),
                          ("x=int:1.5:3", "whole numbers"), ("x=choice:a", "two or more"), ("=log:1:2", "expected")]:
        with pytest.raises(ConfigError, match=fragment):
            parse_param(bad)
    assert type(make_pruner("median")).__name__ == "MedianPruner"
    assert type(make_pruner("threshold:5")).__name__ == "ThresholdPruner"
    assert type(make_pruner("percentile:25")).__name__ == "PercentilePruner"
    for bad in ("hyperband", "median:3", "percentile:x"):
        with pytest.raises(ConfigError, match="--prune"):
            make_pruner(bad)


# ---------------------------------------------------------------- the supervisor's part


def test_prune_asks_the_run_through_its_run_dir_and_signals_it(tmp_path):
    import signal as sig

    from tests.support.supervision import make_supervisor

    sup, spawner = make_supervisor(tmp_path, gpus=())
    sup.enqueue("resnet18_baseline", ["data.source=synthetic"], study="s", group="g")
    (started,) = sup.pump()
    assert spawner.started[0]["item"]["study"] == "s" and spawner.started[0]["item"]["group_key"] == "g"
    sup.prune(started.run_id, "pruned at epoch 2")
    assert read_request(sup.ws.home / started.run_id)["status"] == "pruned"
    assert spawner.proc(started.run_id).signals == [sig.SIGTERM]
    sup.close()


def test_a_run_on_another_host_is_stopped_through_its_run_dir_not_by_a_local_pid(tmp_path):
    from tests.support.supervision import make_supervisor

    sup, _ = make_supervisor(tmp_path, gpus=())
    run_id = "resnet18_baseline-20260101T000000Z-0b0b"
    (sup.ws.home / run_id).mkdir(parents=True)
    sup.store.run_started(run_id, config={"name": "resnet18_baseline", "data": {"source": "synthetic"}}, device="cuda:0",
                          pid=os.getpid(), run_dir=str(sup.ws.home / run_id), epochs_total=2, params=1, flops=None)
    sup.store.conn.execute("UPDATE runs SET host='gpu-node-7' WHERE run_id=?", (run_id,))
    assert sup.status(run_id) == "running"  # alive by its heartbeat: no pid check on another host
    assert sup.stop(run_id) is None  # nothing signalled here (the pid is this test's own)
    assert read_request(sup.ws.home / run_id)["status"] == "stopped"
    assert sup.status(run_id) == "stopping"
    sup.store.conn.execute("UPDATE runs SET heartbeat_at=? WHERE run_id=?", (time.time() - 3600, run_id))
    assert sup.status(run_id) == "crashed"  # silent for an hour: gone, whichever host
    sup.close()
