"""The distillation teacher (loss.kd): a finished run, frozen, fed the student's batches.

``loss.kd.teacher_mode`` says how its BatchNorm normalises:
``eval``
    running statistics (the usual way to use a trained network).
``train``
    the seed's way: its LightningModule holds the teacher, freezes it with requires_grad_(False)
    and never switches it to evaluation mode, so Lightning's model.train() leaves it in training
    mode and BatchNorm normalises with each batch's own statistics.  Here its BatchNorm layers stop
    tracking running statistics instead of updating them: the outputs are those of a train-mode
    forward, and the teacher's buffers stay as its checkpoint has them (the seed's teacher moved
    its running statistics, which nothing read).  Under DDP with ``train.sync_bn`` the teacher's
    BatchNorm is synchronised too, so N processes still match one.

The teacher sees the student's batch as its own training did: resized to its ``data.image_size``
and re-normalised from the student's ``data.normalize`` to its own (a per-channel affine map, so
a `none` student feeds a `cifar100` teacher the images that teacher was trained on).
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import load_checkpoint
from .config import ConfigError, ExperimentConfig, config_from_dict, read_config_file
from .data.formats import NORMALIZE_STATS
from .ddp import convert_sync_batchnorm
from .losses import Criterion
from .models import build_model
from .record.store import Store


def batch_statistics_mode(model: nn.Module) -> nn.Module:
    """Training mode with every BatchNorm normalising by the batch and tracking nothing."""
    model.train(True)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.track_running_stats = False
    return model


def renormalization(student: str, teacher: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(scale, bias), shaped (1, 3, 1, 1), that map a batch normalised with `student` to `teacher`'s
    normalisation: x_t = x_s * std_s / std_t + (mean_s - mean_t) / std_t; None when they are the same."""
    if student == teacher:
        return None
    (mean_s, std_s), (mean_t, std_t) = NORMALIZE_STATS[student], NORMALIZE_STATS[teacher]
    scale = [s / t for s, t in zip(std_s, std_t)]
    bias = [(ms - mt) / t for ms, mt, t in zip(mean_s, mean_t, std_t)]
    return (torch.tensor(scale, device=device).view(1, 3, 1, 1), torch.tensor(bias, device=device).view(1, 3, 1, 1))


class Teacher:
    """A frozen finished run used for knowledge distillation.  ``student_normalize`` is the
    data.normalize of the batches it is fed (None: the teacher's own)."""

    def __init__(self, run_dir: Path, device: torch.device, channels_last: bool, mode: str = "eval",
                 sync_bn: bool = False, mixed_targets: bool = False, student_normalize: str | None = None):
        self.cfg = config_from_dict(read_config_file(run_dir / "config.yaml"), str(run_dir / "config.yaml"))
        if mixed_targets and self.cfg.loss.margin != "none":
            # its logits pass its own margin, which needs one class per image (a MixUp/CutMix batch has two)
            raise ConfigError(f"loss.kd.teacher: {run_dir.name} trains with loss.margin: {self.cfg.loss.margin}, whose "
                              f"logits need one class per image; data.mixup mixes two (distil from a linear-head "
                              f"teacher, or turn data.mixup off)")
        state = load_checkpoint(run_dir / "checkpoints" / "best.pt")
        model_cfg = self.cfg.model.model_copy(update={"pretrained": False, "weights": None})
        self.model = build_model(model_cfg)
        self.model.load_state_dict(state["model"])
        self.model.to(device).requires_grad_(False)
        if mode == "train":
            if sync_bn:  # DDP with train.sync_bn: batch statistics over the global batch, as the student's
                self.model = convert_sync_batchnorm(self.model, device)
            batch_statistics_mode(self.model)
        else:
            self.model.train(False)
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.criterion = Criterion(self.cfg.loss)
        self.image_size = self.cfg.data.image_size
        self._renormalize = renormalization(student_normalize or self.cfg.data.normalize, self.cfg.data.normalize,
                                            torch.device(device))

    @torch.no_grad()
    def logits(self, x: torch.Tensor | tuple[torch.Tensor, ...], labels: torch.Tensor) -> torch.Tensor:
        """Teacher logits for a batch; a multi-scale batch (a tuple, one tensor per size group)
        runs one forward per group, as the student does."""
        groups = x if isinstance(x, tuple) else (x,)
        outputs = []
        for xi in groups:
            if self._renormalize is not None:  # before any upsampling: the same (both are linear), on fewer pixels
                scale, bias = self._renormalize
                xi = torch.addcmul(bias, xi, scale)
            if xi.shape[-1] != self.image_size:
                xi = F.interpolate(xi, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
            outputs.append(self.model(xi))
        # the teacher's logits pass its own margin too, as in the seed
        return self.criterion.train_logits(torch.cat(outputs) if len(outputs) > 1 else outputs[0], labels)


def resolve_teacher(cfg: ExperimentConfig, home: Path) -> Path | None:
    """The run directory of cfg.loss.kd.teacher: a run id, or the latest finished run of a config."""
    if cfg.loss.kd is None:
        return None
    ref = cfg.loss.kd.teacher
    direct = Path(home) / ref
    if ref not in (".", "..") and "/" not in ref and (direct / "checkpoints" / "best.pt").is_file():
        return direct
    store = Store(home)
    try:
        row = store.latest_finished(ref, cfg.data.source)
    finally:
        store.close()
    if row and row.get("run_dir") and (Path(row["run_dir"]) / "checkpoints" / "best.pt").is_file():
        return Path(row["run_dir"])
    raise ConfigError(f"loss.kd.teacher: no finished {cfg.data.source} run of {ref!r} in {home}; "
                      f"train the teacher first: cifar-tui run {ref}" + (" --data synthetic" if cfg.is_synthetic else ""))
