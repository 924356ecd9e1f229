"""A finished (or stopped) run as a model to use: its config, weights and test-time preprocessing.

Shared by evaluation, predict and export, so that all three see the run exactly as its
own evaluation did: the same checkpoint format, the same model code, the same test
batches (resize to ``data.image_size``, scale to [0, 1], normalisation) and the same
evaluation logits (cosine logits times ``s`` for a margin head).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import load_checkpoint
from ..config import ConfigError, ExperimentConfig
from ..data import EvalPipeline, load_dataset
from ..data.formats import CIFAR100_FOLDER, NORMALIZE_STATS, SYNTHETIC_FOLDER, Dataset, _parse_meta
from ..data.synthetic import _synthetic_classes
from ..keep import checkpoint_path
from ..losses import Criterion
from ..models import build_model
from ..record.paths import check_run_id, read_run_config

@dataclass
class RunModel:
    run_id: str
    run_dir: Path
    cfg: ExperimentConfig
    model: torch.nn.Module  # evaluation mode, on `device`
    device: torch.device
    checkpoint: Path
    epoch: int | None
    best_acc: float | None

    @property
    def criterion(self) -> Criterion:
        return Criterion(self.cfg.loss)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The evaluation logits (softmax of these: the class probabilities)."""
        return self.criterion.eval_logits(self.model(x)).float()


def load_run_model(home: Path, run_id: str, which: str = "best", device: torch.device | str = "cpu") -> RunModel:
    run_id = check_run_id(run_id)
    run_dir = Path(home) / run_id
    cfg = read_run_config(run_dir)
    path = checkpoint_path(run_dir, which)
    device = torch.device(device)
    state = load_checkpoint(path, map_location=device)
    # the weights come from the checkpoint: never download or read pretrained weights here
    model = build_model(cfg.model.model_copy(update={"pretrained": False, "weights": None}))
    try:
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError) as exc:
        raise ConfigError(f"{path}: weights do not fit the run's model {cfg.model.backbone} "
                          f"({str(exc).splitlines()[0][:160]})") from None
    model.to(device).train(False).requires_grad_(False)
    if cfg.train.channels_last:
        model.to(memory_format=torch.channels_last)
    return RunModel(run_id, run_dir, cfg, model, device, path, state.get("epoch"), state.get("best_acc"))


def load_test_set(cfg: ExperimentConfig, data_root: Path) -> Dataset:
    """The run's test images (the same source, root and test_limit); the training set is not loaded."""
    return load_dataset(cfg.data.model_copy(update={"train_limit": 1}), Path(data_root))


def class_names(cfg: ExperimentConfig, data_root: Path) -> list[str]:
    """The run's class names from its data's meta file, without loading the images. Without the
    data on this machine: the synthetic set's names, or CIFAR-100's class indices as text."""
    root = Path(cfg.data.root) if cfg.data.root else Path(data_root)
    folder = root / (CIFAR100_FOLDER if cfg.data.source == "cifar100" else SYNTHETIC_FOLDER)
    if (folder / "meta").is_file():
        return _parse_meta(folder / "meta", f"delete {folder} and fetch it again")
    if cfg.data.source == "synthetic":
        return _synthetic_classes()
    return [f"class_{i:03d}" for i in range(cfg.model.num_classes)]


def eval_pipeline(dataset: Dataset, cfg: ExperimentConfig, device: torch.device) -> EvalPipeline:
    return EvalPipeline(dataset, cfg.data, device, channels_last=cfg.train.channels_last, rank=0, world_size=1)


def eval_batch_size(cfg: ExperimentConfig) -> int:
    return cfg.eval.batch_size or cfg.train.batch_size


def preprocessing(cfg: ExperimentConfig) -> dict[str, Any]:
    """What the model's input is and how an image becomes it (the export sidecar)."""
    mean, std = NORMALIZE_STATS[cfg.data.normalize]
    size = cfg.data.image_size
    steps = ["decode to RGB (grayscale: the channel repeated) at CIFAR's 32x32 (area average when shrinking, "
             "bilinear when enlarging; the whole image, no crop)"]
    if size != 32:
        steps.append(f"resize bilinearly to {size}x{size} (align_corners=False, no antialias)")
    steps += ["x = uint8 / 255 (values in [0, 1])", f"x = (x - mean) / std per channel (normalize: {cfg.data.normalize})"]
    return {
        "shape": ["N", 3, size, size], "dtype": "float32", "layout": "NCHW", "color": "RGB",
        "steps": steps, "normalize": cfg.data.normalize, "mean": list(mean), "std": list(std),
        "value_range": [[(0.0 - m) / s for m, s in zip(mean, std)], [(1 - m) / s for m, s in zip(mean, std)]],
    }
