"""The `cifar-tui` command line (Typer). Heavy modules (torch, textual) load inside commands."""
from __future__ import annotations

import json
import os
import sqlite3
import sys
from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer
from typer.core import TyperOption
from rich.markup import escape
from rich.table import Table

from engine.errors import ConfigError
from engine.record.paths import EVENTS_FILE, default_data_root, default_home, events_path

from .commands import listing
from .commands import runs as run_commands
from .commands import model as model_commands
from .commands import search as search_commands
from .commands import studies as study_commands
from .commands import watch as watch_commands
from .commands.common import (EXIT_BAD_INPUT, command_line, console, err_console, fail, load_experiment, open_store,
                              state, warn)
from .commands.readout import print_groups
from .workspace import Workspace

def _flags_without_type(display_type_rich):
    """Typer's help shows `<bool>` after a flag (`--json <bool>`) as if it took a value: a flag's
    type column is left empty, as click's own help does."""
    def display(self, ctx):
        return None if getattr(self, "is_flag", False) else display_type_rich(self, ctx)
    return display


if hasattr(TyperOption, "display_type_rich"):
    TyperOption.display_type_rich = _flags_without_type(TyperOption.display_type_rich)

app = typer.Typer(
    no_args_is_help=False, invoke_without_command=True, rich_markup_mode="rich",
    help="Run the CIFAR-100 ResNet experiments, watch them live, compare them on a leaderboard.",
)
data_app = typer.Typer(help="Get, check or generate the dataset.", no_args_is_help=True)
app.add_typer(data_app, name="data")


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("cifar-tui")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed: pip install -e .)"


def _print_version(value: bool) -> None:
    if value:
        print(f"cifar-tui {package_version()}")
        raise typer.Exit()


@app.callback()
def main_callback(
    ctx: typer.Context,
    home: Path = typer.Option(None, "--home", envvar="CIFAR_TUI_HOME", help="Runs directory (default ./runs)."),
    data_root: Path = typer.Option(None, "--data-root", envvar="CIFAR_TUI_DATA", help="Data directory (default ./data)."),
    configs: Path = typer.Option(None, "--configs", envvar="CIFAR_TUI_CONFIGS", help="Configs directory (default: the shipped configs)."),
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    if configs is not None and not configs.is_dir():
        fail(f"--configs {configs}: not a directory")
    state.ws = Workspace(home=home or default_home(), data_root=data_root or default_data_root(), configs=configs)
    if ctx.invoked_subcommand is None:
        open_tui()


def open_tui() -> None:
    from .tui.app import run_app

    run_app(state.ws)


# ---------------------------------------------------------------- experiments


@app.command("list")
def list_cmd(as_json: bool = typer.Option(False, "--json", help="One JSON object per line.")) -> None:
    """Experiments: name, model, input size, pretrained, head/loss, the accuracy each is held against
    (ref acc) with its kind: seed (the seed's table), paper, est. (our estimate) or goal (ours)."""
    from .table_rows import experiment_rows, fmt_ref

    rows = experiment_rows(state.ws.configs)
    if as_json:
        for r in rows:
            print(json.dumps(r))
        return
    table = Table(title="Experiments", title_justify="left")
    table.add_column("name", no_wrap=True)
    for col in ("model", "input", "pretrained", "head/loss", "ref acc"):
        table.add_column(col, justify="right" if col in ("input", "ref acc") else "left")
    for r in rows:
        if r["error"]:
            table.add_row(r["name"], f"[red]invalid: {r['error']}[/]", "", "", "", "")
            continue
        table.add_row(r["name"], r["model"], r["input"], "yes" if r["pretrained"] else "no", r["head_loss"],
                      fmt_ref(r["ref_acc"], r["ref_kind"]))
    console.print(table)


@app.command()
def show(name: str = typer.Argument(..., help="Config name or path to a YAML file, or a run id (or unique prefix)."),
         overrides: List[str] = typer.Option([], "--set", help="Override a key: a.b=value (repeatable).")) -> None:
    """The resolved config as YAML; for a run, its config as run, then its study, group and provenance."""
    if not overrides and study_commands.show_run_if_run(name):
        return
    cfg = load_experiment(name, overrides)
    sys.stdout.write(cfg.to_yaml())


# ---------------------------------------------------------------- runs (cifar_tui/commands/runs.py)

run_commands.register(app)
watch_commands.register(app)  # wait, serve (cifar_tui/commands/watch.py)
study_commands.register(app)   # reproduce, studies
search_commands.register(app)  # tune, report


class BoardFormat(str, Enum):
    table = "table"
    markdown = "markdown"
    csv = "csv"
    json = "json"


class BoardBy(str, Enum):
    run = "run"
    group = "group"


@app.command()
def leaderboard(fmt: BoardFormat = typer.Option(BoardFormat.table, "--format", help="table | markdown | csv | json"),
                by: BoardBy = typer.Option(BoardBy.run, "--by", help="run | group (n, mean ± std, 95% interval per "
                                           "group: config + overrides, seed left out)"),
                study: Optional[str] = typer.Option(None, "--study", help="Only the runs of this study."),
                vs: Optional[str] = typer.Option(None, "--vs", metavar="GROUP", help="Per group: each other group "
                                                 "against this one (its name as listed, or its full key): difference "
                                                 "with its 95% interval, p-value, verdict, seeds to resolve it."),
                limit: Optional[int] = listing.limit_option(), show_all: bool = listing.all_option()) -> None:
    """Best test accuracy per run (or per group), with the accuracy each is held against (ref acc:
    the seed's, a paper's, our estimate or our goal); synthetic runs ranked apart. A table shows the
    best 50 of each (--all, --limit N); markdown, csv and json list every one."""
    from .table_rows import fmt_acc, fmt_ref, leaderboard_csv, leaderboard_json, leaderboard_markdown, leaderboard_rows

    keep = listing.row_limit(limit, show_all, complete=fmt is not BoardFormat.table)
    if by is BoardBy.group or vs is not None:
        print_groups(study, fmt.value, keep, vs=vs)
        return
    store = open_store()
    rows = leaderboard_rows([r for r in store.leaderboard() if not study or r.get("study") == study])
    store.close()
    if fmt is BoardFormat.markdown:
        sys.stdout.write(leaderboard_markdown(rows[:keep]))
    elif fmt is BoardFormat.csv:
        sys.stdout.write(leaderboard_csv(rows[:keep]))
    elif fmt is BoardFormat.json:
        print(leaderboard_json(rows[:keep]))
    else:
        columns = [listing.Column(c, right=c in ("#", "best acc", "ref acc", "diff", "best ep")) for c in
                   ("#", "config", "best acc", "ref acc", "diff", "best ep", "epochs", "wall", "status", "run id")]
        for source in ("cifar100", "synthetic"):
            group = [r for r in rows if r["data"] == source]
            if not group:
                continue
            title = "Leaderboard (CIFAR-100)" if source == "cifar100" else "Synthetic data (not CIFAR-100, not ranked with it)"
            shown = group[:keep]
            cells = [[str(r["rank"]), r["config"], fmt_acc(r["best_acc"]), fmt_ref(r["reference"], r["ref_kind"]),
                      "-" if r["diff"] is None else f"{r['diff']:+.2f}", str(r["best_epoch"] or "-"), r["epochs"],
                      r["wall"], r["status"] or "?", r["run_id"]] for r in shown]
            listing.print_table(console, title, columns, cells)
            listing.hidden_line(console, len(group) - len(shown), "lower-ranked run", "best")
        if not rows:
            console.print("no results yet: cifar-tui run resnet18_baseline --data synthetic --epochs 1")


# ---------------------------------------------------------------- data


@data_app.command("download")
def data_download(root: Optional[Path] = typer.Option(None, "--root", help="Data directory (default --data-root)."),
                  url: Optional[str] = typer.Option(None, "--url", help="Mirror URL of cifar-100-python.tar.gz.")) -> None:
    """Download the official CIFAR-100 python archive (progress bar, checksum check)."""
    from engine.data import CIFAR100_URL, DataError, download_cifar100

    root = root or state.ws.data_root
    try:
        folder = download_cifar100(root, url=url or CIFAR100_URL)
    except DataError as exc:
        fail(str(exc))
    console.print(f"CIFAR-100 ready in {folder}")


@data_app.command("verify")
def data_verify(root: Optional[Path] = typer.Option(None, "--root", help="Data directory (default --data-root).")) -> None:
    """Check an existing copy of CIFAR-100 against the official checksums."""
    from engine.data import DataError, verify_cifar100

    root = root or state.ws.data_root
    try:
        counts = verify_cifar100(root)
    except DataError as exc:
        fail(str(exc))
    console.print(f"CIFAR-100 in {root} is intact: {counts}")


@data_app.command("synth")
def data_synth(root: Optional[Path] = typer.Option(None, "--root", help="Data directory (default --data-root)."),
               seed: int = typer.Option(0, "--seed")) -> None:
    """Generate the synthetic CIFAR-100-shaped set (learnable; for demos, tests, offline machines)."""
    from engine.data import write_synthetic

    folder = write_synthetic(root or state.ws.data_root, seed=seed)
    console.print(f"synthetic data written to {folder} (runs on it are labelled synthetic)")


@app.command()
def plot(run_ids: List[str] = typer.Argument(..., metavar="RUN_ID...",
                                             help="Run ids (or unique prefixes) to draw (accuracy and loss curves)."),
         out: Optional[Path] = typer.Option(None, "--out", help="Image file to write (.png, .svg, .pdf); default: "
                                            "curves.png in the (first) run's directory.")) -> None:
    """Write accuracy/loss curves of one or more runs as an image (matplotlib) and print its path."""
    from .plot import plot_runs

    try:
        path = plot_runs(state.ws, list(run_ids), out)
    except ConfigError as exc:
        fail(str(exc))
    finally:
        for line in state.ws.take_warnings():
            warn(line)
    console.print(f"wrote {path}")


@app.command()
def bench(as_json: bool = typer.Option(False, "--json", help="One JSON object with every figure."),
          device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N"),
          quick: bool = typer.Option(False, "--quick", help="Fewer repeats and smaller sizes (about 3 minutes on a 2-core CPU)."),
          sections: Optional[List[str]] = typer.Option(None, "--section", help="Only this section (repeatable): "
                                                       "startup, pipeline, train, tui, augment, study; slurm (only when named: it submits jobs)."),
          workspace: Optional[List[int]] = typer.Option(
              None, "--workspace", metavar="N",
              help="Instead: the TUI and `runs`/`leaderboard` with a workspace of N copied runs (repeat for several N)."),
          template: Optional[Path] = typer.Option(
              None, "--template", help="With --workspace: the run directory to copy (default: a tiny engine run).")) -> None:
    """Throughput figures as ratios measured in one process (see docs/BENCHMARKS.md)."""
    if workspace:
        bench_workspace_sizes(list(workspace), template, quick, as_json)
        return
    from dataclasses import replace

    from .bench import BenchPlan, render_bench, run_bench

    plan = BenchPlan.quick() if quick else BenchPlan.full()
    if sections:
        known = plan.sections + plan.optional_sections
        unknown = [name for name in sections if name not in known]
        if unknown:
            fail(f"--section: unknown section {unknown[0]!r} (expected one of {', '.join(known)})")
        plan = replace(plan, sections=tuple(name for name in known if name in sections))
    try:
        results = run_bench(device=device, quick=quick, progress=not as_json, plan=plan)
    except ConfigError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        fail("bench interrupted", code=130)
    except RuntimeError as exc:  # a measurement's training run failed: say so, no traceback
        fail(f"bench failed: {exc}", code=1)
    if as_json:
        print(json.dumps(results))
    else:
        render_bench(results, console)


def bench_workspace_sizes(sizes: list[int], template: Optional[Path], quick: bool, as_json: bool) -> None:
    from .bench.workspace import bench_workspace, render_workspace

    if any(n < 0 for n in sizes):
        fail(f"--workspace: expected a number of runs (0 or more), got {min(sizes)}")
    if template is not None and not events_path(template).is_file():
        fail(f"--template {template}: expected a run directory with an {EVENTS_FILE}")
    try:
        results = bench_workspace(sizes, quick=quick, template=template, progress=not as_json)
    except KeyboardInterrupt:
        fail("bench interrupted", code=130)
    except RuntimeError as exc:  # the template run or the TUI failed: say so, no traceback
        fail(f"bench failed: {exc}", code=1)
    if as_json:
        print(json.dumps(results))
    else:
        render_workspace(results, console)


model_commands.register(app)  # eval, predict, export (commands/model.py)


def main() -> None:
    # the engines this command starts record it in their provenance (launcher_command)
    os.environ["CIFAR_TUI_COMMAND"] = command_line()
    try:
        app()
    except ConfigError as exc:  # safety net: a user mistake is never a traceback
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(EXIT_BAD_INPUT)
    except sqlite3.DatabaseError as exc:  # damaged beyond what opening it can tell (a bad page), or locked
        db = str(getattr(getattr(state, "ws", None), "home", Path("runs")) / "cifar_tui.db")
        advice = "" if isinstance(exc, sqlite3.OperationalError) else (
            f"; move it aside (mv {db} {db}.bad) and cifar-tui rebuilds it from the run directories")
        err_console.print(f"[bold red]error:[/] {escape(db)}: {escape(str(exc))}{escape(advice)}",
                          highlight=False, soft_wrap=True)
        sys.exit(EXIT_BAD_INPUT)


if __name__ == "__main__":
    main()
