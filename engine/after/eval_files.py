"""The files an evaluation leaves: the confusion matrix as CSV and as a PNG heat map, and the result as JSON.

They go to ``runs/<id>/eval/`` (``<ckpt>[-tta-flip]-confusion.csv``, ``...-confusion.png``,
``....json``); an ensemble's go to ``runs/ensembles/<key>/``. Each file is written to a
temp name and renamed, so a reader never sees half a file.
"""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def confusion_csv(confusion: np.ndarray, classes: list[str]) -> str:
    """Rows: true class; columns: predicted class; cells: image counts."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["true \\ predicted", *classes])
    for name, row in zip(classes, confusion):
        writer.writerow([name, *(int(v) for v in row)])
    return out.getvalue()


def confusion_png(confusion: np.ndarray, classes: list[str], title: str) -> bytes:
    """A heat map of the row-normalised matrix (the share of each true class given to each prediction)."""
    from matplotlib.figure import Figure  # the object API: no pyplot, no GUI backend, thread-safe

    counts = confusion.sum(1, keepdims=True)
    rates = np.divide(confusion, counts, out=np.zeros(confusion.shape, dtype=np.float64), where=counts > 0)
    c = len(classes)
    side = max(6.0, min(22.0, 0.16 * c + 3))
    fig = Figure(figsize=(side, side), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(rates, cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest")
    font = max(3.0, min(8.0, 0.42 * side * 72 / max(c, 1)))  # about half a row of the plot per label
    ax.set_xticks(range(c), labels=classes, rotation=90, fontsize=font)
    ax.set_yticks(range(c), labels=classes, fontsize=font)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def write_result_files(folder: Path, stem: str, result: dict[str, Any], metrics: Any, classes: list[str]) -> dict[str, str]:
    """Write the confusion CSV and PNG and the result JSON; returns their paths (added to the result)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"confusion_csv": folder / f"{stem}-confusion.csv", "confusion_png": folder / f"{stem}-confusion.png",
             "result_json": folder / f"{stem}.json"}
    _atomic_write(paths["confusion_csv"], confusion_csv(metrics.confusion, classes).encode())
    title = f"{result['run_id']} ({stem}): top-1 {metrics.top1:.2f}%, top-5 {metrics.top5:.2f}%, {metrics.n} images"
    _atomic_write(paths["confusion_png"], confusion_png(metrics.confusion, classes, title))
    named = {k: str(v) for k, v in paths.items()}
    _atomic_write(paths["result_json"], (json.dumps({**result, **named}, indent=1) + "\n").encode())
    return named
