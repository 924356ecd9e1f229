"""`cifar-tui eval`, `predict` and `export`: what people do with a trained run.

The work is done in the engine (engine/after/evaluate.py, predict.py, export.py); this module reads
the arguments, prints the results and turns a user mistake into one line and exit 2. torch is
imported inside the commands only. Registered on the main app by cli.py (`register`).
"""
from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from engine.errors import ConfigError
from engine.keep import checkpoint_path

EXIT_PARITY_FAILED = 1


class TTA(str, Enum):
    none = "none"
    flip = "flip"


class ExportFormat(str, Enum):
    onnx = "onnx"
    torchscript = "torchscript"


def resolve_run(run_id: str) -> str:
    """The run a RUN_ID argument (an id or a unique prefix) names, or ConfigError. Every command
    here resolves through this one call."""
    from engine.record.paths import resolve_run_id

    from .common import state

    run_id = resolve_run_id(state.ws.home, run_id)
    if not (state.ws.home / run_id / "config.yaml").is_file():
        raise ConfigError(f"run {run_id!r}: no config.yaml in {state.ws.home / run_id}: not a finished run")
    return run_id


def _user_errors() -> tuple[type[Exception], ...]:
    """The exceptions that are the user's input (one line, exit 2). Evaluated when one is raised:
    a DataError can only come from engine.data, which is loaded by then (importing it here would load torch)."""
    data = sys.modules.get("engine.data.formats")
    return (ConfigError, data.DataError) if data else (ConfigError,)


def _pct(v: Optional[float]) -> str:
    return "-" if v is None else f"{v:.2f}"


# ---------------------------------------------------------------- eval


def eval_cmd(
    run_ids: List[str] = typer.Argument(..., help="Run ids; several: each one and their ensemble (mean of softmax)."),
    ckpt: str = typer.Option("best", "--ckpt", help="best | last | N (an epoch's weights kept with train.keep: all)."),
    tta: TTA = typer.Option(TTA.none, "--tta", help="none | flip: also average over the mirrored image."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N"),
    as_json: bool = typer.Option(False, "--json", help="One JSON object (an ensemble's has `members`)."),
) -> None:
    """Top-1/top-5, per-class accuracy, most confused pairs; confusion matrix as CSV + PNG in the run dir."""
    from .common import console, fail, state

    try:
        ids = [resolve_run(r) for r in run_ids]
        for run_id in ids:  # a missing checkpoint is said before torch loads
            checkpoint_path(state.ws.home / run_id, ckpt)
        from engine.after.evaluate import evaluate_runs

        store = state.ws.store()
        try:
            result = evaluate_runs(state.ws.home, state.ws.data_root, ids, ckpt=ckpt, tta=tta.value, device=device,
                                   store=store)
        finally:
            store.close()
    except _user_errors() as exc:
        fail(str(exc))
    if as_json:
        print(json.dumps(result))
        return
    render_eval(result, console)


def render_eval(result: dict, console) -> None:
    members = result.get("members") or [result]
    title = (f"Evaluation: {result['n']} {result['data_source']} test images, checkpoint {result['ckpt']}, "
             f"TTA {result['tta']}")
    table = Table(title=title, title_justify="left")
    for col in ("run", "epoch", "top-1", "top-5", "loss", "run's best"):
        table.add_column(col, justify="left" if col == "run" else "right")
    for m in members:
        table.add_row(m["run_id"], str(m.get("epoch") or "-"), _pct(m["top1"]), _pct(m["top5"]), f"{m['loss']:.4f}",
                      _pct(m.get("run_best_acc")))
    if result.get("members"):
        table.add_row(f"[bold]ensemble of {len(members)}[/]", "", f"[bold]{_pct(result['top1'])}[/]",
                      f"[bold]{_pct(result['top5'])}[/]", f"{result['loss']:.4f}", "")
    console.print(table)
    from engine.after.evaluate import worst_classes

    worst = Table(title="Worst classes", title_justify="left")
    for col in ("class", "accuracy", "images"):
        worst.add_column(col, justify="left" if col == "class" else "right")
    for r in worst_classes(result["per_class"]):
        worst.add_row(r["name"], _pct(r["accuracy"]), str(r["count"]))
    confused = Table(title="Most confused (true -> predicted)", title_justify="left")
    for col in ("true", "predicted", "images", "share of true class"):
        confused.add_column(col, justify="left" if col in ("true", "predicted") else "right")
    for r in result["confused"]:
        confused.add_row(r["true"], r["predicted"], str(r["count"]), f"{r['share']:.1f}%")
    console.print(worst)
    console.print(confused)
    console.print(f"confusion matrix: {result['confusion_csv']}\nheat map:         {result['confusion_png']}")


# ---------------------------------------------------------------- predict


def predict_cmd(
    run_id: str = typer.Argument(..., help="Run id."),
    images: List[Path] = typer.Argument(..., help="Image files (PNG, JPEG, ...; any size, colour or grayscale)."),
    ckpt: str = typer.Option("best", "--ckpt", help="best | last | N"),
    top: int = typer.Option(5, "--top", min=1, help="How many classes to show per image."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N"),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per image."),
) -> None:
    """The top classes and probabilities of each image, preprocessed as the run's test images."""
    from .common import console, fail, state

    try:
        run_id = resolve_run(run_id)
        from engine.after.predict import predict_files

        results = predict_files(state.ws.home, state.ws.data_root, run_id, images, ckpt=ckpt, device=device, top=top)
    except _user_errors() as exc:
        fail(str(exc))
    for r in results:
        if as_json:
            print(json.dumps(r))
            continue
        console.print(f"[bold]{r['image']}[/]", highlight=False)
        for rank, c in enumerate(r["top"], 1):
            console.print(f"  {rank}. {c['name']:<24} {100 * c['prob']:6.2f}%", highlight=False)


# ---------------------------------------------------------------- export


def export_cmd(
    run_id: str = typer.Argument(..., help="Run id."),
    fmt: ExportFormat = typer.Option(..., "--format", help="onnx | torchscript"),
    out: Optional[Path] = typer.Option(None, "--out", help="File to write (default runs/<id>/export/<id>.onnx|.torchscript.pt)."),
    ckpt: str = typer.Option("best", "--ckpt", help="best | last | N"),
    tolerance: float = typer.Option(1e-3, "--tolerance", min=0.0, help="Largest logit difference the parity check accepts."),
    as_json: bool = typer.Option(False, "--json", help="Print the sidecar (with the parity check) as JSON."),
) -> None:
    """A model file that runs without cifar-tui, a JSON sidecar (input, normalisation, classes), a parity check."""
    from engine.record.paths import check_out_file

    from .common import console, err_console, fail, state

    try:
        if out is not None:
            check_out_file(out)  # before torch is loaded: a bad --out is said at once
        from engine.after.export import export_run

        result = export_run(state.ws.home, state.ws.data_root, resolve_run(run_id), fmt.value, out, ckpt=ckpt,
                            tolerance=tolerance)
    except _user_errors() as exc:
        fail(str(exc))
    parity = result["parity"]
    if as_json:
        print(json.dumps(result))
    else:
        size_mb = Path(result["path"]).stat().st_size / 1e6
        console.print(f"wrote {result['path']} ({fmt.value}, {size_mb:.1f} MB)\n  and {result['sidecar']}", highlight=False)
        console.print(f"parity: max |logit difference| {parity['max_abs_diff']:.3g} over {parity['images']} test images "
                      f"({parity['runtime']} vs PyTorch), tolerance {parity['tolerance']:g}: "
                      + ("[green]ok[/]" if parity["ok"] else "[bold red]FAILED[/]"), highlight=False)
    if not parity["ok"]:
        err_console.print(f"[bold red]error:[/] parity check failed: {parity['max_abs_diff']:.3g} > {parity['tolerance']:g}",
                          highlight=False)
        raise typer.Exit(EXIT_PARITY_FAILED)


# ---------------------------------------------------------------- resume --epochs


def check_resume_epochs(run_id: str, row: Optional[dict], epochs: Optional[int]) -> None:
    """Refuse what `cifar-tui resume RUN_ID [--epochs N]` cannot do (ConfigError)."""
    from engine.keep import check_extendable
    from engine.record.paths import read_run_config

    from .common import state

    done = int((row or {}).get("epochs_done") or 0)
    completed = bool(row and row["status"] == "completed")
    if epochs is None:
        if completed:
            raise ConfigError(f"run {run_id} already completed all {row['epochs_total']} epochs; "
                              f"to train it longer: cifar-tui resume {run_id} --epochs N")
        return
    if completed:
        check_extendable(run_id, state.ws.home / run_id, read_run_config(state.ws.home / run_id), done, epochs)
    elif epochs <= done:
        raise ConfigError(f"--epochs {epochs}: run {run_id} has trained {done} epochs already; give a larger total")


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_cmd)
    app.command("predict")(predict_cmd)
    app.command("export")(export_cmd)
