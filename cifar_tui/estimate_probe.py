"""The estimate's probe (run as `python -m cifar_tui.estimate_probe` by cifar_tui.estimate.Probe):
a few steps of the real training loop for the config on its device, timed.

Reads {"config": <resolved config>, "device": "cpu|cuda|mps"} on stdin; prints one JSON line
{"train_s_per_image": s} (seconds per train image, a test image counted as estimate.EVAL_COST of
one, as the history is). The config runs as asked (model, input size, precision, augmentation,
SAM) on a small synthetic set in a temporary workspace, two epochs of a few steps, the second
timed; left out: pretrained weights (same speed), a distillation teacher (needs its run) and
torch.compile (its compile time would be all the probe measured).
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from pathlib import Path

from .estimate import EVAL_COST

NEVER = 1_000_000  # checkpoint_every: the probe writes no checkpoint
STEPS = {"cpu": 3, "cuda": 10, "mps": 5}


def probe_config(raw: dict, device: str):
    from engine.config import config_from_dict

    data, train = raw.setdefault("data", {}), raw.setdefault("train", {})
    size = max([data.get("image_size") or 32, *(data.get("train_sizes") or [])])
    batch = int(train.get("batch_size") or 250)
    if device == "cpu":  # per image, a CPU's time hardly depends on the batch: keep the probe short
        batch = max(2, min(batch, int(64 * (32 / size) ** 2)))
    steps = STEPS.get(device, 3)
    data.update(source="synthetic", root=None, train_limit=batch * steps, test_limit=batch)
    train.update(batch_size=batch, epochs=2, device=device, compile=False,
                 checkpoint_every=NEVER, early_stop=None, keep="best")
    raw.setdefault("model", {}).update(pretrained=False, weights=None)
    raw.setdefault("loss", {})["kd"] = None
    raw["eval"] = {"every": 1, "batch_size": batch}
    return config_from_dict(raw, "estimate probe")


def measure(raw: dict, device: str, workdir: Path) -> float:
    from engine.hooks import TrainerHook
    from engine.record.paths import new_run_id
    from engine.trainer import Trainer

    cfg = probe_config(raw, device)
    timed: dict[str, float] = {}

    class Timer(TrainerHook):
        def epoch_end(self, trainer, record) -> None:
            if record["epoch"] == 2:  # the first epoch warms up (allocations, kernels, workers)
                timed["epoch_s"] = float(record["epoch_s"])

    trainer = Trainer(cfg, run_id=new_run_id("estimate-probe"), home=workdir / "runs", data_root=workdir / "data",
                      hooks=[Timer()])
    trainer.prepare()
    code = trainer.run()
    if code != 0 or "epoch_s" not in timed:
        raise RuntimeError(f"the probe's training ended with exit code {code}")
    units = cfg.data.train_limit + EVAL_COST * cfg.data.test_limit
    return timed["epoch_s"] / units


def main() -> int:
    request = json.loads(sys.stdin.read())
    with contextlib.suppress(OSError):
        os.nice(10)  # the machine's other work (the TUI that asked, running runs) comes first
    with tempfile.TemporaryDirectory(prefix="cifar-tui-probe-") as tmp, contextlib.redirect_stdout(sys.stderr):
        try:
            rate = measure(request["config"], request["device"], Path(tmp))
        except Exception as exc:  # noqa: BLE001 - any failure is the probe's answer, in one line
            print(f"{type(exc).__name__}: {exc}".splitlines()[0], file=sys.stderr)
            return 1
    print(json.dumps({"train_s_per_image": rate}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
