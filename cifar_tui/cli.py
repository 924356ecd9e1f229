"""The `cifar-tui` command line (Typer). Heavy modules (torch, textual) load inside commands."""
from __future__ import annotations

import json
import os
import sys
import time
from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from engine.config import ConfigError
from engine.paths import default_data_root, default_home

from .launch import LaunchRequest, Workspace

app = typer.Typer(
    add_completion=False, no_args_is_help=False, invoke_without_command=True, rich_markup_mode="rich",
    help="Run the CIFAR-100 ResNet experiments, watch them live, compare them on a leaderboard.",
)
data_app = typer.Typer(help="Get, check or generate the dataset.", no_args_is_help=True)
app.add_typer(data_app, name="data")

# piped output is not cut to 80 columns (tables stay one row per line)
_PIPE_WIDTH = None if sys.stdout.isatty() else int(os.environ.get("COLUMNS", 200))
console = Console(width=_PIPE_WIDTH)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 1000)

EXIT_BAD_INPUT = 2


class UserError(Exception):
    """One line for the user, exit 2."""


def fail(message: str, code: int = EXIT_BAD_INPUT) -> None:
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)  # a key may look like markup
    raise typer.Exit(code)


class _State:
    ws: Workspace


state = _State()


@app.callback()
def main_callback(
    ctx: typer.Context,
    home: Path = typer.Option(None, "--home", envvar="CIFAR_TUI_HOME", help="Runs directory (default ./runs)."),
    data_root: Path = typer.Option(None, "--data-root", envvar="CIFAR_TUI_DATA", help="Data directory (default ./data)."),
    configs: Path = typer.Option(None, "--configs", envvar="CIFAR_TUI_CONFIGS", help="Configs directory (default: the shipped configs)."),
) -> None:
    if configs is not None and not configs.is_dir():
        fail(f"--configs {configs}: not a directory")
    state.ws = Workspace(home=home or default_home(), data_root=data_root or default_data_root(), configs=configs)
    if ctx.invoked_subcommand is None:
        open_tui()


def open_tui() -> None:
    try:
        from .app import run_app
    except ImportError:  # the TUI is not built yet: say what there is
        list_cmd()
        console.print("\nSubcommands: list, show, run, resume, runs, stop, leaderboard, data, bench, plot (cifar-tui --help)")
        return
    run_app(state.ws)


# ---------------------------------------------------------------- experiments


@app.command("list")
def list_cmd(as_json: bool = typer.Option(False, "--json", help="One JSON object per line.")) -> None:
    """Experiments: name, model, input size, pretrained, head/loss, seed's accuracy."""
    from .report import experiment_rows, fmt_acc

    rows = experiment_rows(state.ws.configs)
    if as_json:
        for r in rows:
            print(json.dumps(r))
        return
    table = Table(title="Experiments", title_justify="left")
    table.add_column("name", no_wrap=True)
    for col in ("model", "input", "pretrained", "head/loss", "seed acc"):
        table.add_column(col, justify="right" if col in ("input", "seed acc") else "left")
    for r in rows:
        if r["error"]:
            table.add_row(r["name"], f"[red]invalid: {r['error']}[/]", "", "", "", "")
            continue
        table.add_row(r["name"], r["model"], r["input"], "yes" if r["pretrained"] else "no", r["head_loss"], fmt_acc(r["reference"]))
    console.print(table)


def _load(name: str, overrides: list[str]):
    from engine.config import load_config

    try:
        return load_config(name, overrides, state.ws.configs)
    except ConfigError as exc:
        fail(str(exc))


@app.command()
def show(name: str = typer.Argument(..., help="Config name or path to a YAML file."),
         overrides: List[str] = typer.Option([], "--set", help="Override a key: a.b=value (repeatable).")) -> None:
    """The resolved config as YAML."""
    cfg = _load(name, overrides)
    sys.stdout.write(cfg.to_yaml())


# ---------------------------------------------------------------- runs


class DataSource(str, Enum):
    cifar100 = "cifar100"
    synthetic = "synthetic"


def _cli_overrides(overrides: list[str], data: Optional[DataSource], device: Optional[str], epochs: Optional[int]) -> list[str]:
    extra = list(overrides)
    if data is not None:
        extra.append(f"data.source={data.value}")
    if device is not None:
        extra.append(f"train.device={device}")
    if epochs is not None:
        extra.append(f"train.epochs={epochs}")
    return extra


def _finish(launched, code: int, end: dict | None, json_mode: bool) -> int:
    from .launch import discard_unstarted, last_error_line

    if code == EXIT_BAD_INPUT:
        reason = last_error_line(launched.run_dir) or "the engine refused its input"
        discard_unstarted(launched.run_dir)
        err_console.print(f"[bold red]error:[/] {escape(reason)}", highlight=False, soft_wrap=True)
        return code
    if json_mode:
        return code
    where = f"run dir {launched.run_dir}  (store {state.ws.home / 'cifar_tui.db'})"
    if end is None:
        err_console.print(f"[red]run {launched.run_id} ended without an end event (exit {code}); "
                          f"see {launched.run_dir / 'stdout.log'}; resume with: cifar-tui resume {launched.run_id}[/]")
        return code if code else 1
    status = end.get("status")
    best = end.get("best_acc")
    if status == "completed":
        console.print(f"[green]completed[/] {launched.run_id}: best test acc {best if best is None else f'{best:.2f}'}"
                      f" @ epoch {end.get('best_epoch')}; {where}")
    elif status == "stopped":
        console.print(f"[yellow]stopped[/] {launched.run_id} after {end.get('epochs_done')} epochs; "
                      f"continue with: cifar-tui resume {launched.run_id}; {where}")
    else:
        err_console.print(f"[bold red]failed[/] {launched.run_id}: {escape(str(end.get('error')))}; {escape(where)}", highlight=False)
    return code


@app.command()
def run(
    names: List[str] = typer.Argument(..., help="Experiment names (or YAML paths); several run one after another."),
    overrides: List[str] = typer.Option([], "--set", help="Override a key: a.b=value (repeatable)."),
    data: Optional[DataSource] = typer.Option(None, "--data", help="Data source (overrides data.source)."),
    device: Optional[str] = typer.Option(None, "--device", help="auto | cpu | cuda | cuda:N"),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="Overrides train.epochs."),
    as_json: bool = typer.Option(False, "--json", help="Print the events as JSON lines instead of progress."),
    nproc: int = typer.Option(1, "--nproc", min=1, help="Processes (GPUs) per node: runs under torchrun with DDP."),
    nnodes: int = typer.Option(1, "--nnodes", min=1, help="Nodes for torchrun."),
    node_rank: int = typer.Option(0, "--node-rank", min=0, help="This node's rank for torchrun."),
    master_addr: Optional[str] = typer.Option(None, "--master-addr", help="torchrun rendezvous address."),
    parallel: bool = typer.Option(False, "--parallel", help="Run the names side by side: one run per visible GPU "
                                  "(--nproc GPUs for a DDP run), pinned with CUDA_VISIBLE_DEVICES."),
    max_parallel: Optional[int] = typer.Option(None, "--max-parallel", min=1, help="With --parallel: at most this many "
                                               "runs at a time (default: one per GPU; 1 without GPUs)."),
) -> None:
    """Train in the foreground (headless). Ctrl-C stops cleanly and keeps the run resumable."""
    from .follow import follow
    from .launch import launch

    extra = _cli_overrides(overrides, data, device, epochs)
    requests = [LaunchRequest(n, extra) for n in names]
    configs = [_load(r.config_ref, r.overrides) for r in requests]  # all checked before anything starts
    torchrun_args = None
    if nnodes > 1 or master_addr:
        torchrun_args = [f"--nnodes={nnodes}", f"--node-rank={node_rank}"] + ([f"--master-addr={master_addr}"] if master_addr else [])
    if parallel:
        from .gpus import run_parallel

        raise typer.Exit(run_parallel(state.ws, list(zip(requests, configs)), nproc=nproc, torchrun_args=torchrun_args,
                                      max_parallel=max_parallel, json_mode=as_json, console=console,
                                      finish=lambda launched, code, end: _finish(launched, code, end, as_json)))
    final = 0
    for request, cfg in zip(requests, configs):
        try:
            launched = launch(state.ws, request, cfg=cfg, nproc=nproc, torchrun_args=torchrun_args)
        except ConfigError as exc:
            fail(str(exc))
        code, end = follow(launched, json_mode=as_json, console=console)
        code = _finish(launched, code, end, as_json)
        final = final or code
        if code in (EXIT_BAD_INPUT, 130):
            break
    raise typer.Exit(final)


@app.command()
def resume(run_id: str = typer.Argument(..., help="Run id (see `cifar-tui runs`)."),
           as_json: bool = typer.Option(False, "--json", help="Print the events as JSON lines.")) -> None:
    """Continue a stopped or crashed run from its last checkpoint."""
    from engine.paths import check_run_id

    from .follow import follow
    from .launch import resume as resume_run

    try:
        check_run_id(run_id)
    except ConfigError as exc:
        fail(str(exc))
    run_dir = state.ws.home / run_id
    if not (run_dir / "config.yaml").is_file():
        fail(f"run {run_id!r}: not found in {state.ws.home} (see `cifar-tui runs`)")
    store = state.ws.store()
    row = store.run(run_id)
    store.close()
    if row and row["status"] == "running":
        fail(f"run {run_id} is still running (pid {row['pid']}); stop it first: cifar-tui stop {run_id}")
    if row and row["status"] == "completed":
        fail(f"run {run_id} already completed all {row['epochs_total']} epochs")
    # show only what this resume adds to the events file
    offset = (run_dir / "events.jsonl").stat().st_size if (run_dir / "events.jsonl").exists() else 0
    launched = resume_run(state.ws, run_id)
    code, end = follow(launched, json_mode=as_json, console=console, from_offset=offset)
    raise typer.Exit(_finish(launched, code, end, as_json))


@app.command()
def stop(run_id: str = typer.Argument(..., help="Run id."),
         wait: float = typer.Option(60.0, "--wait", help="Seconds to wait for the run to write its checkpoint.")) -> None:
    """Stop a run started elsewhere (TUI, another shell) gracefully, as Ctrl-C does."""
    from engine.paths import check_run_id

    from .launch import request_stop, wait_for_exit

    try:
        check_run_id(run_id)  # before the store is opened: a bad id writes nothing
    except ConfigError as exc:
        fail(str(exc))
    store = state.ws.store()
    row = store.run(run_id)
    if row is None:
        fail(f"run {run_id!r}: not found in {state.ws.home} (see `cifar-tui runs`)")
    if row["status"] != "running":
        fail(f"run {run_id} is not running (status {row['status']})")
    if not request_stop(row["pid"]):
        fail(f"run {run_id}: process {row['pid']} is gone")
    console.print(f"stopping {run_id} (pid {row['pid']}) ...")
    if wait_for_exit(row["pid"], wait):
        row = store.run(run_id)
        console.print(f"{run_id}: {row['status'] if row else 'stopped'}; resume with: cifar-tui resume {run_id}")
    else:
        fail(f"run {run_id} did not stop within {wait:.0f}s", code=1)


@app.command()
def runs(as_json: bool = typer.Option(False, "--json", help="One JSON object per line.")) -> None:
    """Every run with its status."""
    from .report import fmt_acc, fmt_duration

    store = state.ws.store()
    rows = store.runs()
    store.close()
    if as_json:
        for r in rows:
            r.pop("config_json", None)
            print(json.dumps(r))
        return
    table = Table(title=f"Runs in {state.ws.home}", title_justify="left")
    table.add_column("run id", no_wrap=True)
    for col in ("status", "data", "device", "epochs", "best acc", "wall", "started"):
        table.add_column(col)
    colors = {"running": "cyan", "completed": "green", "stopped": "yellow", "failed": "red", "crashed": "red"}
    for r in rows:
        started = time.strftime("%Y-%m-%d %H:%M", time.localtime(r["started_at"])) if r["started_at"] else "-"
        st = r["status"]
        table.add_row(r["run_id"], f"[{colors.get(st, 'white')}]{st}[/]", r["data_source"] or "-", r["device"] or "-",
                      f"{r['epochs_done'] or 0}/{r['epochs_total'] or '?'}", fmt_acc(r["best_acc"]),
                      fmt_duration(r["wall_s"]), started)
    console.print(table)


class BoardFormat(str, Enum):
    table = "table"
    markdown = "markdown"
    csv = "csv"
    json = "json"


@app.command()
def leaderboard(fmt: BoardFormat = typer.Option(BoardFormat.table, "--format", help="table | markdown | csv | json")) -> None:
    """Best test accuracy per run, with the seed's reference; synthetic runs ranked apart."""
    from .report import fmt_acc, leaderboard_csv, leaderboard_json, leaderboard_markdown, leaderboard_rows

    store = state.ws.store()
    rows = leaderboard_rows(store.leaderboard())
    store.close()
    if fmt is BoardFormat.markdown:
        sys.stdout.write(leaderboard_markdown(rows))
    elif fmt is BoardFormat.csv:
        sys.stdout.write(leaderboard_csv(rows))
    elif fmt is BoardFormat.json:
        print(leaderboard_json(rows))
    else:
        for source in ("cifar100", "synthetic"):
            group = [r for r in rows if r["data"] == source]
            if not group:
                continue
            title = "Leaderboard (CIFAR-100)" if source == "cifar100" else "Synthetic data (not CIFAR-100, not ranked with it)"
            table = Table(title=title, title_justify="left")
            for col in ("#", "config", "best acc", "seed", "diff", "best ep", "epochs", "wall", "status", "run id"):
                table.add_column(col)
            for r in group:
                diff = "-" if r["diff"] is None else f"{r['diff']:+.2f}"
                table.add_row(str(r["rank"]), r["config"], fmt_acc(r["best_acc"]), fmt_acc(r["reference"]), diff,
                              str(r["best_epoch"] or "-"), r["epochs"], r["wall"], r["status"], r["run_id"])
            console.print(table)
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
def plot(run_ids: List[str] = typer.Argument(..., help="Run ids to draw (accuracy and loss curves)."),
         out: Path = typer.Option(..., "--out", help="PNG file to write.")) -> None:
    """Write accuracy/loss curves of one or more runs as a PNG (matplotlib)."""
    from .plot import plot_runs

    try:
        path = plot_runs(state.ws, list(run_ids), out)
    except ConfigError as exc:
        fail(str(exc))
    console.print(f"wrote {path}")


@app.command()
def bench(as_json: bool = typer.Option(False, "--json", help="One JSON object with every figure."),
          device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N"),
          quick: bool = typer.Option(False, "--quick", help="Fewer repeats and smaller sizes (about 3 minutes on a 2-core CPU)."),
          workspace: Optional[List[int]] = typer.Option(
              None, "--workspace", metavar="N",
              help="Instead: the TUI and `runs`/`leaderboard` with a workspace of N copied runs (repeat for several N)."),
          template: Optional[Path] = typer.Option(
              None, "--template", help="With --workspace: the run directory to copy (default: a tiny engine run).")) -> None:
    """Throughput figures as ratios measured in one process (see docs/BENCHMARKS.md)."""
    if workspace:
        bench_workspace_sizes(list(workspace), template, quick, as_json)
        return
    from .bench import render_bench, run_bench

    try:
        results = run_bench(device=device, quick=quick, progress=not as_json)
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
    from .bench_workspace import bench_workspace, render_workspace

    if any(n < 0 for n in sizes):
        fail(f"--workspace: expected a number of runs (0 or more), got {min(sizes)}")
    if template is not None and not (template / "events.jsonl").is_file():
        fail(f"--template {template}: expected a run directory with an events.jsonl")
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


def main() -> None:
    try:
        app()
    except ConfigError as exc:  # safety net: a user mistake is never a traceback
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(EXIT_BAD_INPUT)


if __name__ == "__main__":
    main()
