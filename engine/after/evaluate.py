"""Evaluation after training: top-1/top-5, per-class accuracy, the confusion matrix and its
worst pairs, ensembles (mean of the members' softmax) and flip test-time augmentation.

The numbers come from class probabilities on the run's own test set, built by the same
test batches and evaluation logits as the trainer's evaluation (engine/after/run_model.py), so the
top-1 of a run's best checkpoint is the run's best test accuracy.
"""
from __future__ import annotations

import hashlib
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import ConfigError
from .run_model import RunModel, eval_batch_size, eval_pipeline, load_run_model, load_test_set

TOPK = 5
TTA_MODES = ("none", "flip")
TOP_CONFUSIONS = 10


def topk_hits(output: torch.Tensor, labels: torch.Tensor, k: int = TOPK) -> torch.Tensor:
    """(correct at top-1, correct at top-k) of one batch, as a float64 tensor on the batch's device."""
    k = min(k, output.shape[1])
    top = output.topk(k, dim=1).indices
    hit = top == labels[:, None]
    return torch.stack([hit[:, 0].sum(), hit.any(dim=1).sum()]).double()


@dataclass
class Predictions:
    """Class probabilities of one model (or an ensemble) on a test set."""
    probs: torch.Tensor   # (N, C) float32, CPU
    labels: torch.Tensor  # (N,) int64, CPU


def _autocast(run: RunModel):
    from ..fast import autocast_dtype

    dtype = autocast_dtype(run.cfg.train.precision, run.device)
    return torch.autocast(run.device.type, dtype=dtype) if dtype else nullcontext()


@torch.no_grad()
def predict_test_set(run: RunModel, dataset, tta: str = "none", batch_size: int | None = None) -> Predictions:
    """Softmax of the run's evaluation logits on every test image (flip: mean with the mirrored image)."""
    if tta not in TTA_MODES:
        raise ConfigError(f"--tta {tta!r}: expected one of {', '.join(TTA_MODES)}")
    pipeline = eval_pipeline(dataset, run.cfg, run.device)
    probs, labels = [], []
    for x, y in pipeline.test_batches(batch_size or eval_batch_size(run.cfg)):
        with _autocast(run):
            p = torch.softmax(run.logits(x), dim=1)
            if tta == "flip":
                p = (p + torch.softmax(run.logits(x.flip(-1)), dim=1)) / 2
        probs.append(p.float().cpu())
        labels.append(y.cpu())
    if not probs:
        raise ConfigError(f"run {run.run_id}: its test set is empty")
    return Predictions(torch.cat(probs), torch.cat(labels))


def ensemble(members: list[Predictions]) -> Predictions:
    """Mean of the members' probabilities; they must have predicted the same test set."""
    first = members[0]
    for m in members[1:]:
        if m.probs.shape != first.probs.shape or not torch.equal(m.labels, first.labels):
            raise ConfigError("ensemble: the runs were evaluated on different test sets "
                              "(data source, data.test_limit or classes differ)")
    return Predictions(torch.stack([m.probs for m in members]).mean(0), first.labels)


@dataclass
class Metrics:
    n: int
    top1: float
    top5: float
    loss: float
    per_class: list[dict[str, Any]]
    confused: list[dict[str, Any]]
    confusion: np.ndarray = field(repr=False)  # (C, C) counts: rows true class, columns predicted

    def summary(self) -> dict[str, Any]:
        return {"n": self.n, "top1": self.top1, "top5": self.top5, "loss": self.loss,
                "per_class": self.per_class, "confused": self.confused}


def compute_metrics(pred: Predictions, classes: list[str], top_confusions: int = TOP_CONFUSIONS) -> Metrics:
    probs, labels = pred.probs.double(), pred.labels
    n, c = probs.shape
    if len(classes) != c:
        raise ConfigError(f"the model has {c} classes but the data set names {len(classes)}")
    hits = topk_hits(probs, labels)
    predicted = probs.argmax(1).numpy()
    truth = labels.numpy()
    confusion = np.bincount(truth * c + predicted, minlength=c * c).reshape(c, c)
    counts = confusion.sum(1)
    per_class = [{"index": i, "name": classes[i], "count": int(counts[i]),
                  "accuracy": None if counts[i] == 0 else 100.0 * float(confusion[i, i]) / float(counts[i])}
                 for i in range(c)]
    off = confusion.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(-off, axis=None, kind="stable")[:top_confusions]
    confused = []
    for flat in order:
        t, p = divmod(int(flat), c)
        if off[t, p] == 0:
            break
        confused.append({"true": classes[t], "predicted": classes[p], "count": int(off[t, p]),
                         "share": 100.0 * float(off[t, p]) / float(counts[t])})
    nll = -torch.log(probs.gather(1, labels[:, None]).clamp_min(1e-12)).mean()
    return Metrics(n=n, top1=100.0 * float(hits[0]) / n, top5=100.0 * float(hits[1]) / n, loss=float(nll),
                   per_class=per_class, confused=confused, confusion=confusion)


def worst_classes(per_class: list[dict[str, Any]], k: int = 10) -> list[dict[str, Any]]:
    """The k classes with the lowest accuracy (of a result's ``per_class``), worst first."""
    rated = [r for r in per_class if r["accuracy"] is not None]
    return sorted(rated, key=lambda r: (r["accuracy"], r["index"]))[:k]


# ---------------------------------------------------------------------------
# Runs -> results (files in the run dir, a row in the store)


def ensemble_key(run_ids: list[str]) -> str:
    ids = sorted(run_ids)
    return "ensemble-" + hashlib.sha1("\n".join(ids).encode()).hexdigest()[:10]


def evaluate_runs(home: Path, data_root: Path, run_ids: list[str], *, ckpt: str = "best", tta: str = "none",
                  device: str = "auto", batch_size: int | None = None, store: Any = None) -> dict[str, Any]:
    """Evaluate each run (and, with several, their ensemble); write the confusion files and the
    result JSON, record the results in `store` when given. Returns the result (the ensemble's
    with ``members`` when there are several runs)."""
    from .eval_files import write_result_files
    from ..ddp import DistInfo, select_device

    if tta not in TTA_MODES:
        raise ConfigError(f"--tta {tta!r}: expected one of {', '.join(TTA_MODES)}")
    dev = select_device(device, DistInfo())
    datasets: dict[tuple, Any] = {}
    members, results = [], []
    for run_id in run_ids:  # a run named twice is two (equal) members: its ensemble is itself
        run = load_run_model(home, run_id, ckpt, dev)
        data = run.cfg.data
        key = (data.source, data.root, data.test_limit)
        if key not in datasets:
            datasets[key] = load_test_set(run.cfg, data_root)
        dataset = datasets[key]
        pred = predict_test_set(run, dataset, tta, batch_size)
        metrics = compute_metrics(pred, dataset.classes)
        result = {"run_id": run.run_id, "ckpt": ckpt, "tta": tta, "epoch": run.epoch, "data_source": dataset.source,
                  "checkpoint": str(run.checkpoint), "run_best_acc": run.best_acc, **metrics.summary()}
        result.update(write_result_files(run.run_dir / "eval", _file_stem(ckpt, tta), result, metrics, dataset.classes))
        members.append((pred, dataset))
        results.append(result)
        if store is not None:
            store.eval_recorded(run.run_id, [run.run_id], result)
    if len(results) == 1:
        return results[0]
    sources = {r["data_source"] for r in results}
    if len(sources) > 1:
        raise ConfigError(f"ensemble: the runs use different data ({', '.join(sorted(sources))})")
    combined = ensemble([p for p, _ in members])
    classes = members[0][1].classes
    metrics = compute_metrics(combined, classes)
    ids = [r["run_id"] for r in results]
    key = ensemble_key(ids)
    result = {"run_id": key, "ensemble": True, "ckpt": ckpt, "tta": tta, "data_source": results[0]["data_source"],
              **metrics.summary(), "members": results}
    result.update(write_result_files(Path(home) / "ensembles" / key, _file_stem(ckpt, tta), result, metrics, classes))
    if store is not None:
        store.eval_recorded(key, ids, result)
    return result


def _file_stem(ckpt: str, tta: str) -> str:
    return ckpt if tta == "none" else f"{ckpt}-tta-{tta}"
