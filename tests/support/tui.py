"""The deterministic fake workspace (runs with events, no engine) and the Pilot helpers the TUI tests share."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest

from cifar_tui.launch import Workspace
from cifar_tui.tui.support import (LogTail, RunState, config_diff, flatten, fmt_eta, matches_filter,
                                   parse_override_text, pane_id_for, short_run)
from engine.config import load_config

ROOT = Path(__file__).resolve().parent.parent.parent
T0 = 1767225600.0  # 2026-01-01T00:00:00Z
DEAD_PID = 2 ** 22 + 12345  # above the default pid_max: never alive


def fake_run(home: Path, name: str, suffix: str, *, source: str = "synthetic", epochs: int = 6, done: int | None = None,
             status: str | None = "completed", overrides: list[str] | None = None, acc_scale: float = 1.0,
             t0: float = T0, steps: int = 4) -> str:
    """Write runs/<id>/ (config.yaml, events.jsonl, stdout.log) as an engine would have; deterministic.

    Not real results: fixtures for tests and snapshots only."""
    cfg = load_config(name, [f"data.source={source}", f"train.epochs={epochs}", *(overrides or [])], ROOT / "configs")
    run_id = f"{name}-20260101T{int((t0 - T0) // 60):02d}0000Z-{suffix}"
    run_dir = home / run_id
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "config.yaml").write_text(cfg.to_yaml())
    done = epochs if done is None else done
    t = t0
    lines = [{"v": 1, "t": t, "type": "start", "run_id": run_id, "config_name": name, "config": cfg.to_dict(),
              "device": "cpu", "data_source": source, "params": 11_227_812, "flops": 0.56e9, "pid": DEAD_PID,
              "host": "fixture-host", "world_size": 1, "resumed_from": None, "steps_per_epoch": steps}]
    best, best_ep = None, None
    log = [f"run {run_id}"]
    for ep in range(1, done + 1):
        for s in range(1, steps + 1):
            t += 2.0
            frac = (ep - 1 + s / steps) / max(epochs, 1)
            lines.append({"v": 1, "t": t, "type": "step", "run_id": run_id, "epoch": ep, "step": s,
                          "steps_per_epoch": steps, "loss": round(4.6 - 3.0 * frac * acc_scale, 4),
                          "acc": round(60 * frac * acc_scale, 3), "lr": 1e-3, "img_per_s": 512.0})
        test_acc = round(55 * (1 - math.exp(-2.5 * ep / epochs)) * acc_scale, 2)
        if best is None or test_acc > best:
            best, best_ep = test_acc, ep
        rec = {"epoch": ep, "train_loss": round(4.6 - 3.0 * ep / epochs * acc_scale, 4),
               "train_acc": round(60 * ep / epochs * acc_scale, 2), "test_loss": round(4.5 - 2.2 * ep / epochs, 4),
               "test_acc": test_acc, "best_acc": best, "best_epoch": best_ep, "lr": 1e-3, "epoch_s": 8.0,
               "epochs": epochs}
        t += 1.0
        lines.append({"v": 1, "t": t, "type": "epoch", "run_id": run_id, **rec})
        log.append(f"epoch {ep}/{epochs} train loss {rec['train_loss']:.4f} test acc {test_acc:.2f}")
    if status is not None:
        lines.append({"v": 1, "t": t + 1, "type": "end", "run_id": run_id, "status": status,
                      "error": "RuntimeError: fixture failure" if status == "failed" else None,
                      "best_acc": best, "best_epoch": best_ep, "epochs_done": done, "wall_s": done * 8.0})
        log.append(f"{status}")
    (run_dir / "events.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (run_dir / "stdout.log").write_text("\n".join(log) + "\n")
    return run_id


def fake_workspace(tmp: Path) -> tuple[Workspace, dict[str, str]]:
    """A workspace with CIFAR-100-labelled and synthetic runs of several statuses (rows rebuilt from the dirs)."""
    home = tmp / "runs"
    home.mkdir(parents=True, exist_ok=True)
    ids = {
        "c_base": fake_run(home, "resnet18_baseline", "00a1", source="cifar100", epochs=20, t0=T0, acc_scale=0.8),
        "c_pre": fake_run(home, "resnet18_pretrained", "00b2", source="cifar100", epochs=20, t0=T0 + 3600,
                          acc_scale=1.1),
        "s_base": fake_run(home, "resnet18_baseline", "00c3", epochs=6, t0=T0 + 7200, acc_scale=0.9),
        "s_stop": fake_run(home, "resnet18_baseline_lbsmooth", "00d4", epochs=6, done=3, status="stopped",
                           t0=T0 + 10800, overrides=["loss.label_smoothing=0.2"]),
        "s_crash": fake_run(home, "resnet18_cifar_sgd", "00e5", epochs=6, done=2, status=None, t0=T0 + 14400),
    }
    here = Path.cwd() == tmp  # snapshot tests chdir to tmp: paths on screen are then the same everywhere
    ws = Workspace(home=Path("runs") if here else home, data_root=Path("data") if here else tmp / "data", configs=None)
    store = ws.store()  # rebuilds the rows from the run directories
    store.close()
    return ws, ids


async def until_loaded(pilot, app, timeout: float = 10.0) -> None:
    """The experiment list is loaded off the main thread after the first frame."""
    deadline = time.monotonic() + timeout
    while not app.experiments_pane.loaded and time.monotonic() < deadline:
        await pilot.pause(0.05)
    assert app.experiments_pane.loaded


def footer_keys(app) -> dict[str, bool]:
    """The keys the footer shows now: key -> enabled (False: shown dimmed, it cannot act now)."""
    return {key: active.enabled for key, active in app.screen.active_bindings.items() if active.binding.show}


# ---------------------------------------------------------------- tests


