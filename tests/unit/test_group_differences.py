"""Differences between groups, on constructed store rows (real SQLite, no engine): `leaderboard
--by group --vs GROUP` against scipy, its refusals, intervals clamped and marked, the report
against the seed's baseline row with the seed's claims judged, its figures, and references named
for what they are (`list --json`)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sp
from typer.testing import CliRunner

from cifar_tui.cli import app
from cifar_tui.study_report import CLAIMS, write_report
from engine.config import list_config_paths, load_config
from engine.record.rebuild import rebuild_store
from engine.record.store import Store

runner = CliRunner()


def invoke(tmp_path, *args: str):
    return runner.invoke(app, ["--home", str(tmp_path / "runs"), "--data-root", str(tmp_path / "data"), *args],
                         env={"COLUMNS": "250"})


def add_runs(home: Path, config: str, accs: list[float], *, study: str = "s", group: str | None = None,
             seeds: list[int] | None = None, source: str = "cifar100", ref: tuple = (44.26, "seed"),
             status: str = "completed") -> list[str]:
    """Store rows of finished runs, as the engine writes them (one epoch each, its best accuracy)."""
    store = Store(home)
    ids = []
    for i, acc in enumerate(accs):
        seed = seeds[i] if seeds else i
        rid = f"{config}-{study}-{abs(hash(group)) % 10000}-{seed}"
        cfg = {"name": config, "data": {"source": source}, "train": {"seed": seed},
               "reference": {"accuracy": ref[0], "kind": ref[1]}}
        store.run_started(rid, config=cfg, device="cpu", pid=os.getpid(), run_dir=str(home / rid), epochs_total=1,
                          params=1, flops=None, study=study, group=group or config)
        store.epoch_done(rid, {"epoch": 1, "test_acc": acc, "best_acc": acc, "best_epoch": 1}, 2.0)
        store.run_ended(rid, status, None, 2.0)
        ids.append(rid)
    store.save_study(study, "sweep", config, {})
    store.close()
    return ids


BASE = [44.1, 44.6, 43.9, 44.4, 44.2]
LBS = [44.9, 45.0, 44.3, 45.2, 44.8]   # the same seeds 0-4: paired
WD = [40.1, 39.2, 40.6]                # seeds 0-2 only: Welch


def sweep_rows(home: Path) -> None:
    add_runs(home, "resnet18_baseline", BASE, group="resnet18_baseline optim.lr=0.001")
    add_runs(home, "resnet18_baseline", LBS, group="resnet18_baseline optim.lr=0.003")
    add_runs(home, "resnet18_baseline", WD, group="resnet18_baseline optim.lr=0.01")


def test_leaderboard_vs_a_group_gives_the_difference_interval_p_value_verdict_and_seeds(tmp_path):
    sweep_rows(tmp_path / "runs")
    res = invoke(tmp_path, "leaderboard", "--by", "group", "--study", "s", "--vs", "lr=1e-3", "--format", "json")
    assert res.exit_code == 0, res.output
    groups = {g["label"]: g for g in json.loads(res.stdout)}
    assert set(groups) == {"lr=1e-3", "lr=3e-3", "lr=0.01"} and groups["lr=1e-3"]["baseline"]
    paired = groups["lr=3e-3"]["vs"]
    ref = sp.ttest_rel(LBS, BASE)
    ci = ref.confidence_interval(0.95)
    assert paired["test"] == "paired" and paired["p"] == pytest.approx(ref.pvalue, rel=1e-9)
    assert paired["ci"] == pytest.approx([ci.low, ci.high], rel=1e-9) and paired["diff"] == pytest.approx(0.6)
    assert paired["verdict"] == ("better" if ref.pvalue < 0.05 else "not resolved")
    welch = groups["lr=0.01"]["vs"]
    ref = sp.ttest_ind(WD, BASE, equal_var=False)
    ci = ref.confidence_interval(0.95)
    assert welch["test"] == "welch" and welch["p"] == pytest.approx(ref.pvalue, rel=1e-9)
    assert welch["ci"] == pytest.approx([ci.low, ci.high], rel=1e-9) and welch["verdict"] == "worse"
    assert groups["lr=1e-3"]["group"] == "resnet18_baseline optim.lr=0.001"  # the full key beside the name

    table = invoke(tmp_path, "leaderboard", "--by", "group", "--study", "s", "--vs", "lr=1e-3")
    assert table.exit_code == 0 and "vs lr=1e-3" in table.stdout and "worse" in table.stdout
    assert "baseline" in table.stdout and "paired" in table.stdout and "welch" in table.stdout
    csv = invoke(tmp_path, "leaderboard", "--by", "group", "--study", "s", "--vs", "lr=1e-3", "--format", "csv")
    assert "vs_verdict" in csv.stdout.splitlines()[0] and "0.001" in csv.stdout  # full precision in CSV


@pytest.mark.parametrize("args,flag", [
    (["leaderboard", "--by", "group", "--vs", "lr=5e-3"], "--vs lr=5e-3: no such group"),
    (["leaderboard", "--by", "group", "--vs", "lr="], "--vs lr=: matches several groups"),
    (["run", "resnet18_baseline", "--set", "optim.lr=1e-3,3e-3", "--seeds", "auto"], "--max-seeds:"),
    (["run", "resnet18_baseline", "--set", "optim.lr=1e-3,3e-3", "--seeds", "auto", "--max-seeds", "5",
      "--target-ci", "0"], "--target-ci 0.0: expected a half-width above 0"),
    (["run", "resnet18_baseline", "--set", "optim.lr=1e-3,3e-3", "--seeds", "auto", "--max-seeds", "5",
      "--target-ci", "-1"], "--target-ci -1.0: expected a half-width above 0"),
    (["run", "resnet18_baseline", "--set", "optim.lr=1e-3,3e-3", "--seeds", "auto", "--max-seeds", "5",
      "--vs", "lr=0.1"], "--vs lr=0.1: no such group; expected one of: lr=1e-3, lr=3e-3"),
    (["run", "resnet18_baseline", "--set", "optim.lr=1e-3,3e-3", "--seeds", "auto", "--max-seeds", "1",
      "--vs", "lr=1e-3"], "--max-seeds 1: expected 2 to 1000"),
    (["run", "resnet18_baseline", "--set", "optim.lr=1e-3,3e-3", "--seeds", "auto", "--max-seeds", "5"],
     "--seeds auto: say when a group is resolved"),
    (["run", "resnet18_baseline", "--seeds", "some"], "--seeds some: expected a whole number of at least 1, or auto"),
    (["run", "resnet18_baseline", "--max-seeds", "4"], "--max-seeds: only with --seeds auto"),
])
def test_bad_input_is_one_line_naming_the_flag_exit_2_and_nothing_queued(tmp_path, args, flag):
    sweep_rows(tmp_path / "runs")
    res = invoke(tmp_path, *args)
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and flag in lines[0], res.output
    store = Store(tmp_path / "runs")
    assert store.queued(include_owned=True) == [] and len(store.runs()) == 13
    store.close()


def test_intervals_are_clamped_to_0_100_and_said_so_one_run_has_none_two_are_wide(tmp_path):
    home = tmp_path / "runs"
    add_runs(home, "resnet18_baseline", [0.5, 4.0, 7.5], group="resnet18_baseline optim.lr=10")  # diverged
    add_runs(home, "resnet18_baseline", [41.0, 42.0], group="resnet18_baseline optim.lr=0.001")
    add_runs(home, "resnet18_baseline", [41.5], group="resnet18_baseline optim.lr=0.002")
    groups = {g["label"]: g for g in json.loads(invoke(tmp_path, "leaderboard", "--by", "group", "--format",
                                                         "json").stdout)}
    low, high = sp.t.interval(0.95, 2, loc=4.0, scale=sp.sem([0.5, 4.0, 7.5]))
    assert low < 0 and groups["lr=10"]["ci95"] == pytest.approx([0.0, high], abs=1e-4)
    assert groups["lr=10"]["ci95_clamped"] and groups["lr=1e-3"]["ci95_wide"] and groups["lr=2e-3"]["ci95"] is None
    table = invoke(tmp_path, "leaderboard", "--by", "group").stdout
    assert f"[0.00, {high:.2f}] clamped" in table and "wide" in table and "-4." not in table


def test_the_report_holds_each_seed_row_against_our_baseline_and_judges_the_seeds_claims(tmp_path):
    home = tmp_path / "runs"
    rng = np.random.default_rng(3)
    accs = {"resnet18_baseline": BASE, "resnet18_baseline_lbsmooth": LBS,
            "resnet18_augment": list(rng.normal(36.0, 0.6, 4)), "resnet18_baseline_wd01": list(rng.normal(45.5, 0.3, 4)),
            "resnet18_pretrained": [56.0, 56.4]}
    for config, values in accs.items():
        add_runs(home, config, values, study="seed", ref=(44.0, "seed"))
    store = Store(home)
    result = write_report(store, tmp_path / "report.md", study="seed")
    store.close()
    text = (tmp_path / "report.md").read_text()
    claims = {(c["claim"].text, c["claim"].config): c for c in result["claims"]}
    assert len(result["claims"]) == len(CLAIMS)
    assert claims[("augmentation hurts", "resnet18_augment")]["status"] == "confirmed"
    assert claims[("augmentation hurts", "resnet18_augment_fresh")]["status"] == "not run"  # named, not run here
    assert claims[("weight decay 0.1 hurts", "resnet18_baseline_wd01")]["status"] == "contradicted"
    lbs = claims[("label smoothing helps", "resnet18_baseline_lbsmooth")]
    ref = sp.ttest_rel(LBS, BASE)
    assert lbs["vs"]["p"] == pytest.approx(ref.pvalue, rel=1e-9)
    assert lbs["status"] == ("confirmed" if ref.pvalue < 0.05 else "not resolved")
    assert claims[("ArcFace helps", "resnet18_pretrained_arcface")]["status"] == "not run"
    row = next(line for line in text.splitlines() if line.startswith("| resnet18_baseline_wd01.yaml"))
    cells = row.split(" | ")
    assert cells[7] == "-4.14" and cells[10] == "better"  # the seed's difference beside ours
    assert "resnet18_augment_fresh vs resnet18_baseline" in text and "| contradicted |" in text
    # every group its own figure, linked from its row; the means figure beside the seed's numbers
    links = [line.split("[png](")[1].split(")")[0] for line in text.splitlines() if "[png](" in line]
    assert len(links) == len(set(links)) == len(accs)
    assert all((tmp_path / link).stat().st_size > 5000 for link in links)
    assert "![The groups' means (CIFAR-100)](report_files/means_cifar100.png)" in text
    assert (tmp_path / "report_files" / "means_cifar100.png").stat().st_size > 5000


def test_references_are_named_for_what_they_are(tmp_path):
    for path in list_config_paths():
        cfg = load_config(str(path))
        if cfg.reference.accuracy is not None:
            assert cfg.reference.kind in ("seed", "paper", "estimate", "goal"), path.name
    rows = {json.loads(line)["name"]: json.loads(line) for line in invoke(tmp_path, "list", "--json").stdout.splitlines()}
    assert (rows["resnet18_baseline"]["ref_acc"], rows["resnet18_baseline"]["ref_kind"]) == (44.26, "seed")
    assert (rows["resnet18_cifar_sgd"]["ref_acc"], rows["resnet18_cifar_sgd"]["ref_kind"]) == (75.61, "paper")
    assert (rows["resnet18_cutmix"]["ref_acc"], rows["resnet18_cutmix"]["ref_kind"]) == (80.0, "estimate")
    assert (rows["resnet18_fast"]["ref_acc"], rows["resnet18_fast"]["ref_kind"]) == (75.0, "goal")
    table = invoke(tmp_path, "list").stdout
    assert "ref acc" in table and "seed acc" not in table and "goal 75.00" in table and "75.61 paper" in table


def test_seed_and_reference_kind_survive_a_rebuild_and_fill_in_for_an_older_store(tmp_path):
    """Pairing by seed and naming a reference need the `seed` and `reference_kind` columns: written
    at a run's start, rebuilt from its run dir, and filled in from the resolved config for the rows
    of a store made before they existed."""
    import sqlite3

    from tests.support.tui import fake_run

    home = tmp_path / "runs"
    home.mkdir()
    rid = fake_run(home, "resnet18_fast", "0a0a", overrides=["train.seed=7"])
    store = Store(home)
    rebuild_store(store)  # the row from the run directory
    row = store.run(rid)
    assert (row["seed"], row["reference_kind"], row["reference_acc"]) == (7, "goal", 75.0)
    with store.conn:  # as a store from before the two columns: drop them (SQLite >= 3.35)
        store.conn.execute("ALTER TABLE runs DROP COLUMN seed")
        store.conn.execute("ALTER TABLE runs DROP COLUMN reference_kind")
    store.close()
    assert "seed" not in {r[1] for r in sqlite3.connect(home / "cifar_tui.db").execute("PRAGMA table_info(runs)")}
    store = Store(home)
    row = store.run(rid)
    assert (row["seed"], row["reference_kind"]) == (7, "goal")
    store.close()
