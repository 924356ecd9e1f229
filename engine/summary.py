"""A run's summaries beside its events: summary.csv (timm's columns) and TensorBoard's HParams.

``summary.csv`` has timm's columns (``epoch, train_loss, eval_loss, eval_top1, eval_top5, lr``,
as timm's ``update_summary`` writes them) and is rewritten after every epoch, so a resumed
run that repeats an epoch still has one row per epoch. An epoch without evaluation
(``eval.every`` > 1) leaves the eval columns empty.

TensorBoard: the run's hyperparameters (every config leaf, flattened to ``section.key``) go
into the run's own ``tb/`` event file as the HParams plugin's session summaries, with the
metrics ``hparam/best_acc``, ``test/acc``, ``test/top5`` and ``test/loss``. This is what
``SummaryWriter.add_hparams`` writes, through the run's existing writer: ``add_hparams``
itself would open a second event file in a time-stamped sub-directory, i.e. a second
"run" in TensorBoard without the run's curves.
"""
from __future__ import annotations

import csv
import io
import os
import sys
from pathlib import Path
from typing import Any

from .config import ExperimentConfig

SUMMARY_FILE = "summary.csv"
SUMMARY_COLUMNS = ("epoch", "train_loss", "eval_loss", "eval_top1", "eval_top5", "lr")
# summary column <- epoch event field
_FROM_EPOCH = {"epoch": "epoch", "train_loss": "train_loss", "eval_loss": "test_loss", "eval_top1": "test_acc",
               "eval_top5": "test_top5", "lr": "lr"}
HPARAM_METRICS = ("hparam/best_acc", "test/acc", "test/top5", "test/loss")
_SKIP_HPARAMS = {"description", "reference.source"}


def read_summary(run_dir: Path) -> list[dict[str, str]]:
    """The rows of summary.csv ([] when there is none); a torn row is skipped."""
    try:
        text = (Path(run_dir) / SUMMARY_FILE).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return []
    rows = []
    for row in csv.DictReader(io.StringIO(text)):
        if row.get("epoch", "").isdigit() and None not in row.values():
            rows.append(row)
    return rows


def write_summary_row(run_dir: Path, record: dict[str, Any]) -> Path:
    """Record one finished epoch: earlier rows stay, rows of this epoch or later (a resume repeats them) go."""
    path = Path(run_dir) / SUMMARY_FILE
    epoch = int(record["epoch"])
    rows = [r for r in read_summary(run_dir) if int(r["epoch"]) < epoch]
    rows.append({col: _cell(record.get(field)) for col, field in _FROM_EPOCH.items()})
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=SUMMARY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    tmp = path.with_name(f".{SUMMARY_FILE}.tmp-{os.getpid()}")
    tmp.write_text(out.getvalue(), encoding="utf-8")
    os.replace(tmp, path)
    return path


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)  # shortest exact form, as Python prints it
    return str(value)


def flat_hparams(config: dict[str, Any], prefix: str = "") -> dict[str, float | int | str | bool]:
    """Config leaves as TensorBoard hparams: numbers, strings and booleans; anything else as text."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if name in _SKIP_HPARAMS:
            continue
        if isinstance(value, dict):
            out.update(flat_hparams(value, f"{name}."))
        elif isinstance(value, (bool, int, float, str)):
            out[name] = value
        else:  # lists, tuples, None (e.g. model.weights): their text
            out[name] = "none" if value is None else str(list(value) if isinstance(value, tuple) else value)
    return out


class RunSummaries:
    """summary.csv and the HParams session of one run; written by rank 0. Never fails the run."""

    def __init__(self, run_dir: Path, cfg: ExperimentConfig, tb: Any):
        self.run_dir, self.cfg, self.tb = Path(run_dir), cfg, tb

    def started(self) -> None:
        if self.tb is None:
            return
        try:
            from torch.utils.tensorboard.summary import hparams

            experiment, session_start, _ = hparams(flat_hparams(self.cfg.to_dict()), dict.fromkeys(HPARAM_METRICS, 0.0))
            writer = self.tb._get_file_writer()
            writer.add_summary(experiment)
            writer.add_summary(session_start)
        except Exception as exc:  # noqa: BLE001 - an optional summary must not stop training
            print(f"warning: TensorBoard hparams not written: {exc}", file=sys.stderr)

    def epoch(self, record: dict[str, Any]) -> None:
        try:
            write_summary_row(self.run_dir, record)
        except OSError as exc:
            print(f"warning: {SUMMARY_FILE} not written: {exc}", file=sys.stderr)
        if self.tb is not None:
            if record.get("test_top5") is not None:
                self.tb.add_scalar("test/top5", record["test_top5"], record["epoch"])
            if record.get("best_acc") is not None:
                self.tb.add_scalar("hparam/best_acc", record["best_acc"], record["epoch"])

    def ended(self, status: str) -> None:
        if self.tb is None or status != "completed":
            return  # a stopped or failed run can be resumed: its session is not over
        try:
            from torch.utils.tensorboard.summary import hparams

            _, _, session_end = hparams({}, {})  # status: success
            self.tb._get_file_writer().add_summary(session_end)
        except Exception as exc:  # noqa: BLE001
            print(f"warning: TensorBoard hparams end not written: {exc}", file=sys.stderr)
