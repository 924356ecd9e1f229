"""The deterministic fake workspace (runs with events, no engine) and the Pilot helpers the TUI tests share."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest

from cifar_tui.workspace import Workspace
from cifar_tui.tui.support import (LogTail, RunState, config_diff, flatten, fmt_eta, matches_filter,
                                   parse_override_text, pane_id_for, short_run)
from engine.config import load_config

ROOT = Path(__file__).resolve().parent.parent.parent
T0 = 1767225600.0  # 2026-01-01T00:00:00Z
DEAD_PID = 2 ** 22 + 12345  # above the default pid_max: never alive


def fake_run(home: Path, name: str, suffix: str, *, source: str = "synthetic", epochs: int = 6, done: int | None = None,
             status: str | None = "completed", overrides: list[str] | None = None, acc_scale: float = 1.0,
             t0: float = T0, steps: int = 4, study: str | None = None, group: str | None = None,
             provenance: dict | None = None) -> str:
    """Write runs/<id>/ (config.yaml, events.jsonl, stdout.log) as an engine would have; deterministic.
    study, group, provenance: as the `start` event of a study's run records them.

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
    lines[0].update({k: v for k, v in (("study", study), ("group", group), ("provenance", provenance)) if v})
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
               "test_acc": test_acc, "test_top5": round(min(99.0, 1.4 * test_acc + 10), 2), "best_acc": best,
               "best_epoch": best_ep, "lr": 1e-3, "epoch_s": 8.0, "epochs": epochs}
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


STUDY = "lr-sweep"
PROVENANCE = {"git_commit": "1111111", "git_dirty": False, "host": "fixture-host",
              "versions": {"python": "3.11.9", "torch": "2.14.1", "timm": "1.0.15"}, "gpus": []}


def add_study(home: Path, study: str = STUDY, *, seeds: int = 3, t0: float = T0 + 18000) -> dict[str, list[str]]:
    """A sweep study of resnet18_baseline on synthetic data: optim.lr 1e-3 and 3e-3 times `seeds`
    seeds (different results per seed), recorded with its study and groups as the supervisor
    records them; the 3e-3 runs ran on another commit and host (provenance differs). Returns
    group -> run ids. Call before the store is opened (rows are rebuilt from the run dirs)."""
    from cifar_tui.sweep import group_key

    out: dict[str, list[str]] = {}
    i = 0
    for lr, scale in (("1e-3", 0.9), ("3e-3", 0.8)):
        for seed in range(seeds):
            overrides = [f"optim.lr={lr}", f"train.seed={seed}"]
            group = group_key("resnet18_baseline", ["data.source=synthetic", "train.epochs=4", *overrides])
            prov = PROVENANCE if lr == "1e-3" else dict(PROVENANCE, git_commit="2222222", host="other-host")
            rid = fake_run(home, "resnet18_baseline", f"5{i:03x}", epochs=4, overrides=overrides, t0=t0 + 60 * i,
                           acc_scale=scale + 0.04 * seed, study=study, group=group, provenance=prov)
            out.setdefault(group, []).append(rid)
            i += 1
    return out


def study_workspace(tmp: Path) -> tuple[Workspace, dict[str, str], dict[str, list[str]]]:
    """fake_workspace plus a recorded sweep study (add_study) of two groups."""
    from engine.record.store import Store

    home = tmp / "runs"
    home.mkdir(parents=True, exist_ok=True)
    groups = add_study(home)
    ws, ids = fake_workspace(tmp)
    store = Store(home)
    store.save_study(STUDY, "sweep", "resnet18_baseline",
                     {"names": ["resnet18_baseline"], "sets": ["optim.lr=1e-3,3e-3"], "extra": [], "seeds": 3},
                     command="cifar-tui run resnet18_baseline --set optim.lr=1e-3,3e-3 --seeds 3 --study lr-sweep")
    with store.conn:  # a fixed creation time: the studies screen shows it
        store.conn.execute("UPDATE studies SET created_at=?, updated_at=? WHERE name=?", (T0 + 18000, T0 + 18000, STUDY))
    store.close()
    return ws, ids, groups


TUNE = "lr-search"


def add_tune_study(ws: Workspace, study: str = TUNE) -> dict[str, object]:
    """A real Optuna study in the workspace's storage, as `cifar-tui tune` leaves it: three trials
    of resnet18_baseline over optim.lr (two completed, one pruned), each an ordinary run of the
    study (run dirs, store rows, the trial's `run_id` attribute). Returns the runs and the best."""
    import optuna

    from cifar_tui.tune import _storage
    from engine.record.rebuild import rebuild_store
    from engine.record.store import Store

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    home = Path(ws.home)
    tried = [(0.0012, 0.85, "completed"), (0.031, 0.95, "completed"), (0.08, 0.5, "pruned")]
    runs = [fake_run(home, "resnet18_baseline", f"7{i:03x}", epochs=4, done=4 if status == "completed" else 2,
                     status=status, overrides=[f"optim.lr={lr}"], acc_scale=scale, t0=T0 + 30000 + 60 * i,
                     study=study) for i, (lr, scale, status) in enumerate(tried)]
    store = Store(home)
    rebuild_store(store)  # the new run dirs become rows
    store.save_study(study, "tune", "resnet18_baseline",
                     {"config": "resnet18_baseline", "params": ["optim.lr=log:1e-4:1e-1"], "trials": 3,
                      "prune": "median", "overrides": ["data.source=synthetic"]})
    with store.conn:
        store.conn.execute("UPDATE studies SET created_at=?, updated_at=? WHERE name=?", (T0 + 30000, T0 + 30000, study))
    bests = {rid: (store.run(rid) or {}).get("best_acc") for rid in runs}
    store.close()
    search = optuna.create_study(study_name=study, storage=_storage(ws), direction="maximize")
    dist = {"optim.lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)}
    for (lr, _, status), rid in zip(tried, runs):
        done = status == "completed"
        search.add_trial(optuna.trial.create_trial(
            params={"optim.lr": lr}, distributions=dist, value=bests[rid] if done else None,
            state=optuna.trial.TrialState.COMPLETE if done else optuna.trial.TrialState.PRUNED,
            user_attrs={"run_id": rid}))
    best = max((rid for rid, (_, _, st) in zip(runs, tried) if st == "completed"), key=lambda r: bests[r])
    return {"runs": runs, "bests": bests, "best_run": best, "best_lr": tried[runs.index(best)][0]}


async def until_loaded(pilot, app, timeout: float = 60.0) -> None:  # polls: a loaded machine only waits longer
    """The experiment list is loaded off the main thread after the first frame."""
    deadline = time.monotonic() + timeout
    while not app.experiments_pane.loaded and time.monotonic() < deadline:
        await pilot.pause(0.05)
    assert app.experiments_pane.loaded


def form_ready(app) -> bool:
    """The launch form is in front, mounted (its on_mount has run), and its first field has the focus.
    Typing before that goes elsewhere; Textual's auto-focus gives the field the focus at compose, before
    on_mount, so the focus alone is not enough."""
    from cifar_tui.tui.screens import LaunchScreen

    return isinstance(app.screen, LaunchScreen) and app.screen.is_mounted and getattr(app.focused, "id", "") == "f-epochs"


async def until_form(pilot, app, timeout: float = 60.0):
    """The launch form, ready (form_ready). Returns the form."""
    deadline = time.monotonic() + timeout
    while not form_ready(app) and time.monotonic() < deadline:
        await pilot.pause(0.05)
    assert form_ready(app), f"the launch form did not come up (screen {app.screen!r}, focus {app.focused!r})"
    return app.screen


def footer_keys(app) -> dict[str, bool]:
    """The keys the footer shows now: key -> enabled (False: shown dimmed, it cannot act now)."""
    return {key: active.enabled for key, active in app.screen.active_bindings.items() if active.binding.show}


# ---------------------------------------------------------------- tests


