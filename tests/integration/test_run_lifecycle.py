"""The run lifecycle at the command line: run ids by unique prefix, `runs rm`, `runs prune`, queued
items in `runs`, and a workspace in which one file is damaged (the database, an events file, a
config.yaml, a checkpoint): every command still opens it, names that file, keeps the rest usable."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.record.store import Store

from tests.conftest import cli
from tests.support.tui import fake_run

SMALL = ["data.train_limit=64", "data.test_limit=64", "train.batch_size=32"]


@pytest.fixture
def runs_ws(workspace):
    """Three finished runs (completed, stopped, failed) and one alive (a real sleeping process)."""
    home = workspace["home"]
    home.mkdir(parents=True)
    ids = {
        "done": fake_run(home, "resnet18_baseline", "00a1", epochs=2, overrides=SMALL),
        "stopped": fake_run(home, "resnet18_baseline", "00b2", epochs=4, done=1, status="stopped", overrides=SMALL,
                            t0=1767225600.0 + 60),
        "failed": fake_run(home, "resnet18_pretrained", "00c3", epochs=2, done=1, status="failed", overrides=SMALL,
                           t0=1767225600.0 + 120),
    }
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"], start_new_session=True)
    live = "resnet18_live-20260101T090000Z-00d4"
    (home / live).mkdir()
    (home / live / "config.yaml").write_text("name: resnet18_baseline\n")
    store = Store(home)
    store.run_started(live, config={"name": "resnet18_baseline", "data": {"source": "synthetic"}}, device="cpu",
                      pid=sleeper.pid, run_dir=str(home / live), epochs_total=5, params=1, flops=None)
    store.close()
    ids["live"] = live
    yield workspace, ids
    if sleeper.poll() is None:
        os.killpg(sleeper.pid, signal.SIGKILL)
    sleeper.wait(5)


def _rows(ws) -> dict[str, dict]:
    res = cli(ws, "runs", "--json")
    assert res.returncode == 0, res.stderr
    return {r.get("run_id") or f"queue:{r['queue_id']}": r for r in map(json.loads, res.stdout.splitlines())}


# ---------------------------------------------------------------- prefixes


def test_a_unique_prefix_names_a_run_and_an_ambiguous_one_lists_the_matches(runs_ws, tmp_path):
    ws, ids = runs_ws
    res = cli(ws, "plot", "resnet18_pre", "--out", str(tmp_path / "p.png"))
    assert res.returncode == 0 and (tmp_path / "p.png").stat().st_size > 0, res.stderr
    res = cli(ws, "stop", "resnet18_baseline")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert f"run id 'resnet18_baseline' is ambiguous: 2 runs match: {ids['done']}, {ids['stopped']}" in res.stderr
    for args in (["resume", "resnet18_base"], ["plot", "resnet18_base", "--out", str(tmp_path / "q.png")],
                 ["runs", "rm", "resnet18"]):
        res = cli(ws, *args)
        assert res.returncode == 2 and "is ambiguous" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    res = cli(ws, "resume", "nosuchrun")
    assert res.returncode == 2 and "run 'nosuchrun': not found" in res.stderr
    res = cli(ws, "resume", ids["done"][:-2])  # unique: the completed run, which cannot be resumed
    assert res.returncode == 2 and f"run {ids['done']} already completed all 2 epochs" in res.stderr


# ---------------------------------------------------------------- runs rm / prune


def test_runs_rm_asks_first_and_never_touches_a_live_run(runs_ws):
    ws, ids = runs_ws
    home = ws["home"]
    res = cli(ws, "runs", "rm", ids["failed"][:-1], ids["live"][:-1], input="n\n")
    assert res.returncode == 1 and "nothing deleted" in res.stdout
    assert f"skipped {ids['live']}: it is running" in res.stderr
    assert (home / ids["failed"]).is_dir() and ids["failed"] in _rows(ws)
    res = cli(ws, "runs", "rm", ids["failed"], ids["live"], input="y\n")
    assert res.returncode == 1  # one was skipped
    assert f"deleted {ids['failed']}" in res.stdout and f"skipped {ids['live']}" in res.stderr
    assert not (home / ids["failed"]).exists() and ids["failed"] not in _rows(ws)
    assert (home / ids["live"]).is_dir() and _rows(ws)[ids["live"]]["status"] == "running"
    res = cli(ws, "runs", "rm", "--yes", ids["stopped"])
    assert res.returncode == 0 and not (home / ids["stopped"]).exists()
    assert set(_rows(ws)) == {ids["done"], ids["live"]}


def test_runs_prune_deletes_old_ended_runs_of_the_given_statuses_only(runs_ws):
    ws, ids = runs_ws
    home = ws["home"]
    res = cli(ws, "runs", "prune", "--status", "running")
    assert res.returncode == 2 and "prune deletes ended runs only" in res.stderr
    res = cli(ws, "runs", "prune", "--status", "failed", "--older-than", "soon")
    assert res.returncode == 2 and "expected a duration like 30m, 12h, 7d or 2w" in res.stderr
    res = cli(ws, "runs", "prune", "--status", "failed,stopped", "--older-than", "100000w", "--yes")
    assert res.returncode == 0 and "nothing to delete" in res.stdout  # none is that old
    res = cli(ws, "runs", "prune", "--status", "failed,stopped", "--older-than", "7d", "--yes")
    assert res.returncode == 0, res.stderr
    assert sorted(line.split()[1] for line in res.stdout.splitlines() if line.startswith("deleted ")) == \
        sorted([ids["failed"], ids["stopped"]])
    assert set(_rows(ws)) == {ids["done"], ids["live"]}
    assert sorted(p.name for p in home.iterdir() if p.is_dir()) == sorted([ids["done"], ids["live"]])


def test_runs_lists_queued_items(runs_ws):
    ws, ids = runs_ws
    store = Store(ws["home"])
    item = store.enqueue("resnet18_baseline", ["data.source=synthetic"])  # the TUI's queue
    store.close()
    rows = _rows(ws)
    assert rows[f"queue:{item}"]["status"] == "queued" and rows[f"queue:{item}"]["config"] == "resnet18_baseline"
    table = cli(ws, "runs").stdout
    assert f"queue #{item} resnet18_baseline" in table and "queued" in table


# ---------------------------------------------------------------- a damaged workspace


def _damage(home: Path, what: str, ids: dict) -> str:
    """Damage one file; return the text the commands must name it by."""
    if what == "database":
        (home / "cifar_tui.db").write_bytes(os.urandom(5000))
        for side in ("cifar_tui.db-wal", "cifar_tui.db-shm"):
            (home / side).unlink(missing_ok=True)
        return "cifar_tui.db is not a readable database"
    if what == "events":
        path = home / ids["failed"] / "events.jsonl"
        path.write_bytes(os.urandom(4000))
        os.utime(path, (time.time() - 60, time.time() - 60))
        (home / "cifar_tui.db").unlink()  # so that the store has to read the run dirs again
        return f"{path}: no readable `start` event"
    if what == "config":
        (home / ids["stopped"] / "config.yaml").write_bytes(b"\x00\xff junk: [")
        return f"{home / ids['stopped'] / 'config.yaml'}"
    path = home / ids["stopped"] / "checkpoints" / "last.pt"
    path.write_bytes(os.urandom(2000))
    return str(path)


@pytest.mark.parametrize("what", ["database", "events", "config", "checkpoint"])
def test_a_workspace_with_one_damaged_file_still_opens_names_it_and_keeps_the_rest(runs_ws, tmp_path, what):
    ws, ids = runs_ws
    Store(ws["home"]).close()
    names = _damage(ws["home"], what, ids)
    res = cli(ws, "runs", "--json")
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
    listed = {json.loads(line)["run_id"] for line in res.stdout.splitlines()}
    expected = {ids["done"], ids["stopped"], ids["failed"]} - ({ids["failed"]} if what == "events" else set())
    assert expected <= listed
    if what in ("database", "events"):
        (line,) = res.stderr.strip().splitlines()  # one warning line, naming the file
        assert line.startswith("warning: ") and names in line
    board = cli(ws, "leaderboard", "--format", "json")
    assert board.returncode == 0 and ids["done"] in board.stdout and "Traceback" not in board.stderr
    plot = cli(ws, "plot", ids["done"], "--out", str(tmp_path / "ok.png"))
    assert plot.returncode == 0, plot.stderr
    if what == "events":
        res = cli(ws, "plot", ids["failed"], "--out", str(tmp_path / "bad.png"))
        assert res.returncode == 2 and names.split(":")[0] in res.stderr and "Traceback" not in res.stderr
    if what in ("config", "checkpoint"):
        env = {**ws["env"], "OMP_NUM_THREADS": "1"}
        res = cli({**ws, "env": env}, "resume", ids["stopped"])
        assert res.returncode == 2 and "Traceback" not in res.stderr, res.stdout + res.stderr
        (line,) = res.stderr.strip().splitlines()
        assert names in line
        assert (ws["home"] / ids["stopped"] / "config.yaml").exists()  # nothing of the run was removed


# ---------------------------------------------------------------- synthetic results are labelled everywhere


def test_synthetic_runs_are_labelled_in_every_view(tmp_path):
    """A workspace with CIFAR-100 and synthetic runs: the default leaderboard table ranks the
    synthetic ones apart under their own title, the CSV says `synthetic` in its data column (and
    gives them no reference figure), and the `runs` table names the data of every run. (The plot
    legend: tests/unit/test_plot.py; markdown and JSON: tests/integration/test_engine_e2e.py.)"""
    from tests.support.reliability import drive
    from tests.support.tui import fake_workspace

    base = tmp_path / "ws"
    base.mkdir()
    _, ids = fake_workspace(base)
    synthetic = {ids[k] for k in ("s_base", "s_stop", "s_crash")}
    cifar = {ids[k] for k in ("c_base", "c_pre")}
    table, csv, runs = drive([(base, ["leaderboard"]), (base, ["leaderboard", "--format", "csv"]), (base, ["runs"])],
                             env={"COLUMNS": "250"})
    for res in (table, csv, runs):
        assert res["code"] == 0 and not res["stderr"].strip(), res

    cifar_part, title, synthetic_part = table["stdout"].partition("Synthetic data (not CIFAR-100, not ranked with it)")
    assert title and cifar_part.lstrip().startswith("Leaderboard (CIFAR-100)"), table["stdout"]
    assert all(rid in cifar_part and rid not in synthetic_part for rid in cifar), table["stdout"]
    assert all(rid in synthetic_part and rid not in cifar_part for rid in synthetic), table["stdout"]

    lines = csv["stdout"].splitlines()
    header = lines[0].split(",")
    rows = {row["run_id"]: row for row in (dict(zip(header, line.split(","))) for line in lines[1:])}
    assert rows.keys() == synthetic | cifar
    assert {rid for rid, row in rows.items() if row["data"] == "synthetic"} == synthetic
    assert {rid for rid, row in rows.items() if row["data"] == "cifar100"} == cifar
    assert all(rows[rid]["reference"] == "" for rid in synthetic) and all(rows[rid]["reference"] for rid in cifar)

    listed = {rid: line for line in runs["stdout"].splitlines() for rid in synthetic | cifar if rid in line}
    assert listed.keys() == synthetic | cifar, runs["stdout"]
    assert all("synthetic" in listed[rid] and "cifar100" not in listed[rid] for rid in synthetic)
    assert all("cifar100" in listed[rid] and "synthetic" not in listed[rid] for rid in cifar)
