"""What the command line says, in process (typer's CliRunner): --version, shell completion, help
without `<bool>` after flags, a mistyped experiment name, `runs` / `leaderboard` showing the newest
(best) 50 with a line for the rest, long listings as plain aligned lines."""
from __future__ import annotations

import io
import json
import re

import pytest
from rich.console import Console
from typer.testing import CliRunner

from cifar_tui.cli import app, package_version
from cifar_tui.commands import listing
from engine.config import ConfigError, load_config

from tests.support.tui import T0, fake_run

runner = CliRunner()


def invoke(tmp_path, *args: str):
    from cifar_tui.commands.common import console

    width = console.width
    console.width = 200  # as piped output is (its width is set when the module loads: in whichever test first)
    try:
        return runner.invoke(app, ["--home", str(tmp_path / "runs"), "--data-root", str(tmp_path / "data"), *args],
                             env={"COLUMNS": "200"})
    finally:
        console.width = width


def test_version_prints_the_package_version(tmp_path):
    res = invoke(tmp_path, "--version")
    assert res.exit_code == 0
    assert res.stdout.strip() == f"cifar-tui {package_version()}"
    assert re.fullmatch(r"cifar-tui \d+\.\d+\.\d+\S*", res.stdout.strip())


def test_shell_completion_is_offered(tmp_path, monkeypatch):
    res = invoke(tmp_path, "--help")
    assert "--install-completion" in res.stdout and "--show-completion" in res.stdout
    # the shell named, not detected from the process tree (under `make` it is /bin/sh: not supported);
    # typer reads this when it builds the command, before CliRunner applies its env
    monkeypatch.setenv("_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION", "1")
    script = invoke(tmp_path, "--show-completion", "bash")
    assert script.exit_code == 0 and "complete" in script.stdout and "COMP_WORDS" in script.stdout


@pytest.mark.parametrize("command", [[], ["runs"], ["run"], ["leaderboard"], ["eval"], ["wait"]])
def test_help_shows_no_type_after_flags(tmp_path, command):
    res = invoke(tmp_path, *command, "--help")
    assert res.exit_code == 0
    assert "<bool>" not in res.stdout
    assert "--help" in res.stdout


def test_a_mistyped_experiment_suggests_the_closest():
    with pytest.raises(ConfigError) as err:
        load_config("resnet18_basline")
    assert "did you mean resnet18_baseline?" in str(err.value)
    assert "resnet50" not in str(err.value)  # not the whole list
    with pytest.raises(ConfigError) as err:
        load_config("nothing_like_it")
    assert "known: convnext_tiny_cifar, resnet18_augment, resnet18_augment_fresh, resnet18_baseline" in str(err.value)


def test_a_mistyped_experiment_on_the_command_line(tmp_path):
    res = invoke(tmp_path, "run", "resnet18_basline", "--data", "synthetic")
    assert res.exit_code == 2
    assert "did you mean resnet18_baseline?" in res.stderr


@pytest.fixture(scope="module")
def many_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("many")
    home = tmp / "runs"
    home.mkdir()
    ids = [fake_run(home, "resnet18_baseline", f"{i:04x}", epochs=1, steps=1, t0=T0 + 60 * i,
                    acc_scale=0.5 + i / 200) for i in range(60)]
    return tmp, ids


def test_runs_shows_the_newest_50_and_says_how_many_are_left_out(many_runs):
    tmp, ids = many_runs
    res = invoke(tmp, "runs")
    assert res.exit_code == 0, res.stdout + res.stderr
    listed = [rid for rid in ids if rid in res.stdout]
    assert listed == ids[-50:]  # the newest
    assert "10 older runs not shown: --all lists every one, --limit N the newest N" in res.stdout
    every = invoke(tmp, "runs", "--all")
    assert [rid for rid in ids if rid in every.stdout] == ids and "not shown" not in every.stdout
    three = invoke(tmp, "runs", "--limit", "3")
    assert [rid for rid in ids if rid in three.stdout] == ids[-3:] and "57 older runs" in three.stdout
    lines = invoke(tmp, "runs", "--json").stdout.splitlines()
    assert len(lines) == 60 and {json.loads(x)["run_id"] for x in lines} == set(ids)


def test_leaderboard_shows_the_best_50_and_csv_stays_complete(many_runs):
    tmp, ids = many_runs
    res = invoke(tmp, "leaderboard")
    assert res.exit_code == 0, res.stdout + res.stderr
    listed = [rid for rid in ids if rid in res.stdout]
    assert sorted(listed) == sorted(ids[-50:])  # the better runs (acc grows with i)
    assert "10 lower-ranked runs not shown" in res.stdout
    assert len(invoke(tmp, "leaderboard", "--format", "csv").stdout.strip().splitlines()) == 61
    assert len(json.loads(invoke(tmp, "leaderboard", "--format", "json").stdout)) == 60


def test_a_long_listing_is_printed_as_plain_aligned_lines():
    out = io.StringIO()
    console = Console(file=out, width=200, color_system=None)
    rows = [[f"run-{i:04d}", "completed" if i % 2 else "failed", f"{i / 3:.2f}"] for i in range(listing.PLAIN_OVER + 1)]
    columns = [listing.Column("run id"), listing.Column("status"), listing.Column("best acc", right=True)]
    listing.print_table(console, "Runs", columns, rows, styles=["red"] * len(rows), style_column=1)
    lines = out.getvalue().splitlines()
    assert lines[0] == "Runs" and lines[1].split() == ["run", "id", "status", "best", "acc"]
    assert len(lines) == 2 + len(rows)
    assert lines[2] == "run-0000  failed         0.00" and lines[-1].endswith("66.67")
    assert len({len(line) for line in lines[2:]}) == 1  # aligned: right-justified numbers, same width
    assert "\x1b[" not in out.getvalue()  # no colour when not a terminal


def test_runs_lists_a_launch_refused_before_start_with_its_reason(tmp_path):
    """What the TUI's Runs tab lists, `cifar-tui runs` lists too: a queued item, and a launch
    refused before its run started, with the reason in full."""
    from cifar_tui.workspace import Workspace
    from engine.store import Store

    from tests.unit.test_tui_refused import REASON, RUN_ID, refused_item

    (tmp_path / "runs").mkdir()
    refused_item(Workspace(home=tmp_path / "runs", data_root=tmp_path / "data", configs=None))
    store = Store(tmp_path / "runs")
    waiting = store.enqueue("resnet18_baseline", ["data.source=synthetic"])
    store.close()
    res = invoke(tmp_path, "runs")
    assert res.exit_code == 0
    text = " ".join(res.stdout.split())
    assert f"✖ not started {RUN_ID}: {REASON}" in text
    assert f"queue #{waiting} resnet18_baseline" in text
    lines = [json.loads(x) for x in invoke(tmp_path, "runs", "--json").stdout.splitlines()]
    assert {"status": "not started", "run_id": RUN_ID, "error": REASON}.items() <= lines[0].items()
    assert lines[1]["queue_id"] == waiting and lines[1]["status"] == "queued"


def test_runs_dismiss_puts_a_refused_launch_away(tmp_path):
    from cifar_tui.workspace import Workspace

    from tests.unit.test_tui_refused import RUN_ID, refused_item

    (tmp_path / "runs").mkdir()
    item = refused_item(Workspace(home=tmp_path / "runs", data_root=tmp_path / "data", configs=None))
    assert f"cifar-tui runs dismiss {item}" in " ".join(invoke(tmp_path, "runs").stdout.split())
    bad = invoke(tmp_path, "runs", "dismiss", str(item + 7))
    assert bad.exit_code == 2 and f"no refused launch #{item + 7} (refused: #{item})" in " ".join(bad.output.split())
    assert invoke(tmp_path, "runs", "dismiss").exit_code == 2  # neither numbers nor --all
    res = invoke(tmp_path, "runs", "dismiss", str(item))
    assert res.exit_code == 0 and f"dismissed #{item} {RUN_ID}" in res.stdout
    assert "not started" not in invoke(tmp_path, "runs").stdout
    assert invoke(tmp_path, "runs", "dismiss", "--all").exit_code == 0  # nothing left: nothing to do
