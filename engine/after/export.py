"""Export a run's model to ONNX or TorchScript, with a JSON sidecar and a parity check.

The exported model takes the preprocessed batch (float32, NCHW, ``data.image_size``, scaled
and normalised as the sidecar says) and returns the evaluation logits: their softmax is the
class probabilities `cifar-tui eval` and `predict` use (a margin head's cosine logits come
out multiplied by its scale s). The batch dimension is dynamic.

ONNX goes through ``torch.onnx.export(..., dynamo=True)``: the exporter torch 2.9+ makes the
default and keeps developing (``torch.export`` graph, onnxscript translation). It runs offline,
and with ``external_data=False`` the weights sit inside the one .onnx file. The older
TorchScript-based exporter (``dynamo=False``) also works offline, but torch marks it
deprecated and slated for removal. TorchScript is ``torch.jit.trace`` (torch marks torch.jit
deprecated too, but it is what loads with ``torch.jit.load`` and nothing else; it is traced,
not scripted, because timm models trace cleanly and script only in part).

The parity check runs the exported file (onnxruntime for ONNX, ``torch.jit.load`` for
TorchScript) and the PyTorch model on a batch of the run's test images, built by the run's
own test pipeline, and reports the largest absolute difference of the logits.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import ConfigError
from ..record.paths import check_out_file
from .run_model import class_names, eval_pipeline, load_run_model, load_test_set, preprocessing

FORMATS = ("onnx", "torchscript")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}
PARITY_IMAGES = 64
DEFAULT_TOLERANCE = 1e-3


class EvalLogits(nn.Module):
    """The run's model followed by its evaluation logits (the Criterion's: times s for a margin head)."""

    def __init__(self, model: nn.Module, criterion: Any):
        super().__init__()
        self.model = model
        self.criterion = criterion  # not a module: traced through, nothing of it is saved but its constant

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.criterion.eval_logits(self.model(x))


def _need_onnx() -> None:
    import importlib.util

    missing = [name for name in ("onnx", "onnxruntime", "onnxscript") if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(f"--format onnx needs {', '.join(missing)}: pip install 'cifar-tui[export]'")


def default_out(run_dir: Path, run_id: str, fmt: str) -> Path:
    return Path(run_dir) / "export" / f"{run_id}{SUFFIXES[fmt]}"


def sidecar_path(out: Path) -> Path:
    return Path(out).with_name(Path(out).name + ".json")


def _export_onnx(module: nn.Module, sample: torch.Tensor, path: Path) -> dict[str, Any]:
    import onnx

    batch = torch.export.Dim("batch", min=1, max=65536)
    quiet = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(quiet):
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (sample,), str(path), dynamo=True, external_data=False, verbose=False,
                          input_names=["input"], output_names=["logits"], dynamic_shapes=({0: batch},))
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    return {"exporter": "torch.onnx.export(dynamo=True)", "opset": opset}


def _run_onnx(path: Path, x: torch.Tensor) -> torch.Tensor:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(["logits"], {"input": x.numpy()})[0])


def _export_torchscript(module: nn.Module, sample: torch.Tensor, path: Path) -> dict[str, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit's deprecation notice
        traced = torch.jit.trace(module, sample)
        traced.save(str(path))
    return {"exporter": "torch.jit.trace"}


def _run_torchscript(path: Path, x: torch.Tensor) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = torch.jit.load(str(path), map_location="cpu")
    with torch.no_grad():
        return loaded(x)


def export_run(home: Path, data_root: Path, run_id: str, fmt: str, out: Path | None = None, *, ckpt: str = "best",
               tolerance: float = DEFAULT_TOLERANCE, parity_images: int = PARITY_IMAGES) -> dict[str, Any]:
    """Write the exported model and its sidecar; returns the sidecar (with ``parity``).
    ``parity.ok`` is False when the largest logit difference is above `tolerance`."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    if fmt == "onnx":
        _need_onnx()
    if out is not None:
        out = check_out_file(Path(out))  # before the model is loaded: a bad --out is said at once
    run = load_run_model(home, run_id, ckpt, "cpu")
    if out is None:
        out = default_out(run.run_dir, run.run_id, fmt)
        out.parent.mkdir(parents=True, exist_ok=True)
        out = check_out_file(out)
    dataset = load_test_set(run.cfg, data_root)
    batch, _ = next(iter(eval_pipeline(dataset, run.cfg, run.device).test_batches(parity_images)))
    batch = batch.contiguous()  # the exported model takes a plain NCHW tensor
    module = EvalLogits(run.model.to(memory_format=torch.contiguous_format), run.criterion)
    module.train(False)
    with torch.no_grad():
        reference = module(batch).float()
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        if fmt == "onnx":
            how = _export_onnx(module, batch[:2], tmp)
            exported = _run_onnx(tmp, batch)
        else:
            how = _export_torchscript(module, batch[:2], tmp)
            exported = _run_torchscript(tmp, batch)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    diff = float((exported.float() - reference).abs().max())
    sidecar = {
        "format": fmt, "file": out.name, "run_id": run.run_id, "checkpoint": ckpt, "epoch": run.epoch,
        "best_acc": run.best_acc, "data_source": run.cfg.data.source, "model": run.cfg.model.backbone,
        "input": {"name": "input", **preprocessing(run.cfg)},
        "output": {"name": "logits", "shape": ["N", len(dataset.classes)],
                   "meaning": "class logits; softmax gives the probabilities cifar-tui eval/predict use"},
        "classes": class_names(run.cfg, data_root),
        "parity": {"max_abs_diff": diff, "tolerance": tolerance, "images": int(batch.shape[0]), "ok": diff <= tolerance,
                   "runtime": "onnxruntime CPU" if fmt == "onnx" else "torch.jit.load"},
        "torch": torch.__version__, **how,
    }
    side = sidecar_path(out)
    side_tmp = side.with_name(f".{side.name}.tmp-{os.getpid()}")
    side_tmp.write_text(json.dumps(sidecar, indent=1) + "\n")
    os.replace(side_tmp, side)
    return {**sidecar, "path": str(out), "sidecar": str(side)}
