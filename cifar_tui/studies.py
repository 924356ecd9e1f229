"""Studies and groups as plain data: what the CLI prints and what a TUI pane shows.

No Textual, no torch, no Optuna import at module level: every function takes a Store (or a
Workspace) and returns dicts and lists.

For a UI
--------
``group_stats(runs) -> [dict]``
    One row per (group, data source) of store rows: its short name (label), n, mean_acc, std_acc,
    ci95 (Student's t, 95%, clamped to [0, 100]), reference and its kind, ref_in_ci, diff, epochs,
    wall_s, runs (the completed run ids the figures use), seeds, unfinished (the other run ids).
    CIFAR-100 groups first, then synthetic ones (their reference is None: never compared with the
    seed's figures). The statistics are cifar_tui.stats', the names cifar_tui.names'.
``find_group(groups, text)``, ``vs_baseline(groups, baseline)``
    The group a user named (--vs); each other group's difference to it (stats.compare: the
    difference with its interval, p-value, verdict, seeds that would resolve it).
``leaderboard_groups(store, study=None) -> [dict]``   the same, for the workspace or one study.
``group_curve(store, run_ids) -> dict``
    The mean test-accuracy curve of some runs with its band: epochs, mean, std, low, high, n
    per epoch (a compare view draws the mean with the band).
``list_studies(store) -> [dict]``
    Every study (recorded ones and names found only on runs): name, kind, config, created_at,
    runs, by_status, groups, best_acc, best_run.
``study_summary(store, name) -> dict | None``  one of them, with its spec and its runs.
``best_trial(ws, study) -> dict | None``
    The best finished trial of an Optuna study: number, value, params, run_id, state counts
    (reads the study's Optuna storage; imports optuna only when called).
``queue_plan(sup, plan, *, kind="sweep", spec=None, nproc=1) -> dict``
    Launch a sweep plan (cifar_tui.sweep.make_plan: a launch form's comma lists and Seeds
    field) on a supervisor: records the study, queues what it lacks, resumes what stopped;
    returns {"items": {item_id: PlannedRun}, "resumed": [run ids], "notes": {index: text}}.
``existing_runs(store, study)``, ``sort_plan(plan, existing)``  what a study already has.
"""
from __future__ import annotations

import hashlib
import json
from typing import Iterable, Sequence

from engine.config import ConfigError
from engine.record.status import COMPLETED, LIVE, PRUNED, RESUMABLE

from .names import name_groups
from .stats import compare, interval, mean_interval, t_quantile  # noqa: F401 - t_quantile: re-exported
from .sweep import GROUP_EXCLUDED, canonical



# ---------------------------------------------------------------- groups


def fallback_group(row: dict) -> str:
    """The group of a run that recorded none (older runs): its config name and a digest of its
    resolved config with the seed, device and data root left out: equal configs, one group."""
    try:
        cfg = json.loads(row.get("config_json") or "{}")
    except ValueError:
        cfg = {}
    for key in GROUP_EXCLUDED:
        section, _, leaf = key.partition(".")
        if isinstance(cfg.get(section), dict):
            cfg[section].pop(leaf, None)
    digest = hashlib.sha1(canonical(cfg).encode()).hexdigest()[:6]
    return f"{row.get('config_name') or '?'} #{digest}"


def group_of(row: dict) -> str:
    return row.get("group_key") or fallback_group(row)


def group_stats(runs: Iterable[dict]) -> list[dict]:
    """One row per (group, data source): statistics of the best test accuracy of its completed runs.

    Rows: group (the full key), label (its short name among these groups: cifar_tui.names), config,
    data, n, mean_acc, std_acc, ci95 [low, high] (None below 2 runs; clamped to [0, 100]),
    ci95_clamped, ci95_wide (from 2 runs), reference (None for synthetic data), ref_kind (seed |
    paper | estimate | goal | None), ref_in_ci (None without both, and for a goal), diff (mean -
    reference), epochs (of the completed runs: "200", or "2-3"), wall_s (mean), runs (completed
    run ids, oldest first), seeds ({seed: best acc} of those runs), unfinished (other run ids),
    studies."""
    buckets: dict[tuple[str, str], list[dict]] = {}
    for r in runs:
        buckets.setdefault((group_of(r), r.get("data_source") or "?"), []).append(r)
    out = []
    for (group, source), rows in buckets.items():
        rows.sort(key=lambda r: r.get("started_at") or 0)
        done = [r for r in rows if r.get("status") == COMPLETED and r.get("best_acc") is not None]
        done_ids = {r["run_id"] for r in done}  # a set: a group of thousands of runs, not a scan per run
        stats = interval([float(r["best_acc"]) for r in done])
        with_ref = next((r for r in rows if r.get("reference_acc") is not None), None)
        ref = with_ref["reference_acc"] if with_ref is not None and source == "cifar100" else None
        kind = with_ref.get("reference_kind") if ref is not None else None
        ci = stats["ci"]
        epochs = sorted({int(r.get("epochs_done") or 0) for r in done})
        walls = [float(r["wall_s"]) for r in done if r.get("wall_s") is not None]
        seeds: dict[str, float] = {}   # seed -> best acc; a run of an unknown or repeated seed under its run id
        for r in done:
            seed = run_seed(r)
            key = str(seed) if seed is not None and str(seed) not in seeds else f"run:{r['run_id']}"
            seeds[key] = float(r["best_acc"])
        out.append({
            "group": group, "config": rows[0].get("config_name"), "data": source,
            "n": stats["n"], "mean_acc": _round(stats["mean"]), "std_acc": _round(stats["std"]),
            "ci95": None if ci is None else [_round(ci[0]), _round(ci[1])],
            "ci95_clamped": stats["clamped"], "ci95_wide": stats["wide"],
            "reference": ref, "ref_kind": kind,
            "ref_in_ci": None if ci is None or ref is None or kind == "goal" else bool(ci[0] <= ref <= ci[1]),
            "diff": None if ref is None or stats["mean"] is None else _round(stats["mean"] - ref),
            "epochs": "-" if not epochs else (str(epochs[0]) if len(epochs) == 1 else f"{epochs[0]}-{epochs[-1]}"),
            "wall_s": _round(sum(walls) / len(walls)) if walls else None,
            "runs": [r["run_id"] for r in done], "seeds": seeds,
            "unfinished": [r["run_id"] for r in rows if r["run_id"] not in done_ids],
            "studies": sorted({r["study"] for r in rows if r.get("study")}),
        })
    out.sort(key=lambda g: (g["data"] != "cifar100", g["mean_acc"] is None, -(g["mean_acc"] or 0), g["group"]))
    names = name_groups([g["group"] for g in out], {g["group"]: g["config"] for g in out if g["config"]})
    for g in out:
        g["label"] = names[g["group"]]
    return out


def groups_title(groups: list[dict]) -> str:
    """What every one of these groups shares (said once above them)."""
    return name_groups([g["group"] for g in groups], {g["group"]: g["config"] for g in groups if g["config"]}).title


def run_seed(row: dict) -> int | None:
    """The train.seed a run ran with: the store's column, else its resolved config."""
    seed = row.get("seed")
    return int(seed) if seed is not None else seed_of(row)


# ---------------------------------------------------------------- differences between groups


def find_group(groups: list[dict], text: str, flag: str = "--vs") -> str:
    """The group (its full key) a user named: the full key, its short name (label), its config name
    when that is one group's, or a part of one label only. ConfigError (one line, naming `flag`)
    when none or several match."""
    wanted = text.strip()
    found: set[str] = set()
    for field in ("group", "label", "config"):
        found = {g["group"] for g in groups if g.get(field) == wanted}
        if found:
            break
    if not found and wanted:
        found = {g["group"] for g in groups if wanted in (g.get("label") or "")}
    if len(found) == 1:
        return next(iter(found))
    listed = sorted({g.get("label") or g["group"] for g in groups if not found or g["group"] in found})
    what = "matches several groups" if found else "no such group"
    raise ConfigError(f"{flag} {text}: {what}; expected one of: {', '.join(listed) or '(no groups yet)'}")


def vs_baseline(groups: list[dict], baseline: str) -> list[dict]:
    """Each group with `vs`: stats.compare(the baseline group's runs, its runs), against the
    baseline's row of the same data source (a group on a source the baseline has no runs on, and
    the baseline itself: None); `baseline`: True on the baseline's rows."""
    base = {g["data"]: g for g in groups if g["group"] == baseline}
    for g in groups:
        b = base.get(g["data"])
        g["baseline"] = g["group"] == baseline
        g["vs"] = compare(b["seeds"], g["seeds"]) if b is not None and not g["baseline"] else None
    return groups


def _round(x: float | None, digits: int = 4) -> float | None:
    return None if x is None else round(x, digits)


def leaderboard_groups(store, study: str | None = None) -> list[dict]:
    """group_stats over the workspace's runs, or over one study's."""
    return group_stats(store.study_runs(study) if study else store.runs())


def group_curve(store, run_ids: Sequence[str], key: str = "test_acc") -> dict:
    """The mean curve of `key` over runs, per epoch, with its band: {"epochs", "mean", "std",
    "low", "high", "n", "runs": {run_id: [values]}}; low/high: mean -+ std (the mean alone where
    only one run reached that epoch)."""
    per_run: dict[str, dict[int, float]] = {}
    for rid in run_ids:
        per_run[rid] = {int(e["epoch"]): float(e[key]) for e in store.epochs(rid) if e.get(key) is not None}
    epochs = sorted({ep for values in per_run.values() for ep in values})
    curve: dict[str, list] = {"epochs": epochs, "mean": [], "std": [], "low": [], "high": [], "n": []}
    for ep in epochs:
        values = [v[ep] for v in per_run.values() if ep in v]
        stats = mean_interval(values)
        std = stats["std"] or 0.0
        curve["mean"].append(stats["mean"])
        curve["std"].append(stats["std"])
        curve["low"].append(stats["mean"] - std)
        curve["high"].append(stats["mean"] + std)
        curve["n"].append(stats["n"])
    curve["runs"] = {rid: [v.get(ep) for ep in epochs] for rid, v in per_run.items()}
    return curve


# ---------------------------------------------------------------- studies


def list_studies(store) -> list[dict]:
    """Every study, newest first: recorded ones (sweep, tune, seed) and names found only on runs."""
    recorded = {s["name"]: s for s in store.studies()}
    names = set(recorded)
    names |= {r[0] for r in store.conn.execute("SELECT DISTINCT study FROM runs WHERE study IS NOT NULL")}
    out = [study_summary(store, name, recorded.get(name)) for name in names]
    out = [s for s in out if s is not None]
    out.sort(key=lambda s: -(s["created_at"] or 0))
    return out


def study_summary(store, name: str, recorded: dict | None = None) -> dict | None:
    """A study: name, kind, config, spec, created_at, runs (rows), by_status, groups, best_acc, best_run."""
    recorded = recorded or store.study(name)
    runs = store.study_runs(name)
    if recorded is None and not runs:
        return None
    by_status: dict[str, int] = {}
    for r in runs:
        by_status[r["status"]] = by_status.get(r["status"], 0) + 1
    finished = [r for r in runs if r["status"] == COMPLETED and r.get("best_acc") is not None]
    best = max(finished, key=lambda r: r["best_acc"], default=None)
    created = (recorded or {}).get("created_at") or min((r.get("started_at") or 0 for r in runs), default=None)
    return {
        "name": name, "kind": (recorded or {}).get("kind") or "runs", "config": (recorded or {}).get("config"),
        "spec": (recorded or {}).get("spec") or {}, "created_at": created, "runs": runs, "by_status": by_status,
        "groups": len({group_of(r) for r in runs}), "best_acc": best["best_acc"] if best else None,
        "best_run": best["run_id"] if best else None,
    }


def seed_of(row: dict) -> int | None:
    """The train.seed a run ran with (from its resolved config)."""
    try:
        return int(json.loads(row.get("config_json") or "{}")["train"]["seed"])
    except (ValueError, KeyError, TypeError):
        return None


_RANK = {COMPLETED: 0, PRUNED: 0, **{s: 1 for s in LIVE}, **{s: 2 for s in RESUMABLE}}


def existing_runs(store, study: str) -> dict[tuple[str, int | None], dict]:
    """(group, seed) -> the study's run for it (completed before live before resumable)."""
    found: dict[tuple[str, int | None], dict] = {}
    for r in store.study_runs(study):
        key = (group_of(r), seed_of(r))
        if key not in found or _RANK.get(r["status"], 3) < _RANK.get(found[key]["status"], 3):
            found[key] = r
    return found


def sort_plan(plan, existing: dict) -> tuple[dict[int, str], list, list[str]]:
    """What a plan still needs: (notes by plan index, PlannedRuns to start, run ids to resume).
    A (group, seed) with a completed, pruned or live run is done; a stopped, failed or crashed
    one is resumed."""
    notes, start, resume = {}, [], []
    for r in plan.runs:
        row = existing.get((r.group, r.seed))
        if row is None or _RANK.get(row["status"], 3) == 3:
            start.append(r)
        elif row["status"] in RESUMABLE:
            notes[r.index] = f"resume {row['run_id']} ({row['status']})"
            resume.append(row["run_id"])
        else:
            notes[r.index] = f"{row['status']}: {row['run_id']}"
    return notes, start, resume


def queue_plan(sup, plan, *, kind: str = "sweep", spec: dict | None = None, nproc: int = 1,
               command: str | None = None, hold: Sequence = ()) -> dict:
    """Record the study and queue on `sup` what the plan still lacks (see sort_plan); `hold`:
    PlannedRuns the caller starts later itself. ConfigError when a run cannot be queued."""
    existing = existing_runs(sup.store, plan.study)
    notes, start, resume = sort_plan(plan, existing)
    recorded = sup.store.study(plan.study)
    if recorded is not None and recorded["kind"] != kind:
        raise ConfigError(f"--study {plan.study}: already a {recorded['kind']} study; choose another name")
    sup.store.save_study(plan.study, kind, ",".join(plan.names), spec or {}, command=command)
    items = {}
    for r in start:
        if any(r is h for h in hold):
            continue
        items[sup.enqueue(r.config, list(r.overrides), nproc, cfg=r.cfg, study=plan.study, group=r.group)] = r
    for run_id in resume:
        sup.resume(run_id)
    return {"items": items, "resumed": resume, "notes": notes, "start": start, "existing": existing}


def best_trial(ws, study: str) -> dict | None:
    """The best finished trial of the Optuna study `study` in the workspace, or None (no such
    study, or no trial completed): {"number", "value", "params", "run_id", "states"}."""
    from .tune import best_trial as tune_best

    return tune_best(ws, study)


# ---------------------------------------------------------------- what a plan costs


def plan_cost(store, cfgs: Sequence, parallel: int = 1, *, probe: bool = False, gpus=None,
              say=None) -> str:
    """The plan's time on this machine's devices, in words: each run from earlier runs of the same
    model and input size here, else a short probe (`probe`: measure the kinds nobody knows yet, one
    probe per model and input size, cached per machine; `say(line)` is told first), else unknown;
    spread over `parallel` runs at a time (never less than its longest run). One estimate per kind
    of run, then each run's own length (epochs, images): a 1,000-run plan costs a few queries."""
    from .estimate import Estimator, fmt_span, run_seconds

    est = Estimator(store, gpus=gpus)
    kinds: dict = {}
    for cfg in cfgs:
        kinds.setdefault(est.key(cfg), cfg)
    rates = {}
    for key, cfg in kinds.items():
        if probe and est.needs_probe(cfg) and say is not None:
            say(f"estimating its time: a short probe of {key.model} on {key.device} (once per model on this "
                "machine; CIFAR_TUI_ESTIMATE_PROBE=off skips it)")
        rates[key] = est.estimate(cfg, probe=probe)
    if not cfgs:
        return "estimated time: nothing to run"
    unknown = next((e for e in rates.values() if not e.known), None)
    if unknown is not None:
        return f"estimated time: unknown ({unknown.note})"
    seconds = [run_seconds(cfg, rates[est.key(cfg)].train_s_per_image) for cfg in cfgs]
    wall = max(sum(seconds) / max(1, parallel), max(seconds))
    first = next(iter(rates.values()))
    n = len(seconds)
    at_once = f", {parallel} at a time" if parallel > 1 and n > 1 else ""
    return (f"estimated time: about {fmt_span(wall)} on {first.device} ({n} run{'s' if n != 1 else ''}{at_once}; "
            f"{first.note})")
