"""What the compare screen shows, as plain data (no Textual): runs or groups side by side, each
with its accuracy curve (a group: the mean curve with its ±1 std band, `studies.group_curve`),
the config keys that differ, and the provenance keys that differ (`engine.record.provenance.differences`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.record.events import latest_start
from engine.record.provenance import differences

from ..names import name_groups
from ..table_rows import fmt_acc, fmt_duration
from ..studies import group_curve
from ..sweep import GROUP_EXCLUDED
from .support import config_diff, flatten, fmt_value, short_run

RUN_SUMMARY = ("run", "config", "data", "best acc", "top-5", "best ep", "epochs", "status")
GROUP_SUMMARY = ("group", "config", "data", "n", "mean ± std", "95% interval", "ref acc", "inside", "epochs", "wall")


@dataclass
class Compared:
    """One column of the comparison: a run, or a group of runs."""

    key: str                       # run id, or the group
    label: str                     # short: legend and column headers
    summary: list[str]             # cells under RUN_SUMMARY or GROUP_SUMMARY
    curve: dict                    # {"epochs", "mean", "low", "high"}: low/high None for a single run
    config: dict                   # the resolved config (a group: its first run's, seed and device left out)
    run_dirs: list[Path] = field(default_factory=list)   # where the provenance is read from


def _config(row: dict | None) -> dict:
    try:
        return json.loads((row or {}).get("config_json") or "{}")
    except json.JSONDecodeError:
        return {}


def compare_runs(store, home: Path, run_ids: list[str]) -> list[Compared]:
    """The runs that still exist, in the order given."""
    out = []
    top5 = store.best_top5(list(run_ids))
    for rid in run_ids:
        r = store.run(rid)
        if r is None:
            continue
        eps = [e for e in store.epochs(rid) if e.get("test_acc") is not None]
        out.append(Compared(
            key=rid, label=short_run(rid),
            summary=[rid, r["config_name"], r.get("data_source") or "?", fmt_acc(r.get("best_acc")),
                     fmt_acc(top5.get(rid)), str(r.get("best_epoch") or "-"),
                     f"{r.get('epochs_done') or 0}/{r.get('epochs_total') or '?'}", r.get("status") or "-"],
            curve={"epochs": [e["epoch"] for e in eps], "mean": [e["test_acc"] for e in eps], "low": None, "high": None},
            config=_config(r), run_dirs=[home / rid]))
    return out


def compare_groups(store, home: Path, groups: list[dict]) -> list[Compared]:
    """Groups (`studies.group_stats` rows): the figures of their completed runs, the mean curve
    of those runs with its band, the config of the first one (seed, device and data root left out)."""
    from ..table_rows import group_cells

    out = []
    names = name_groups([g["group"] for g in groups], {g["group"]: g["config"] for g in groups if g.get("config")})
    for g in groups:
        runs = list(g["runs"]) or list(g["unfinished"])
        cells = group_cells(g)  # group, n, mean ± std, interval, ref acc, inside, diff, epochs, wall
        config = _config(store.run(runs[0])) if runs else {}
        for key in GROUP_EXCLUDED:
            section, _, leaf = key.partition(".")
            if isinstance(config.get(section), dict):
                config[section].pop(leaf, None)
        curve = group_curve(store, g["runs"])
        out.append(Compared(
            key=f"{g['data']}\t{g['group']}", label=names[g["group"]],
            summary=[names[g["group"]], g["config"] or "?", g["data"], cells[1], cells[2], cells[3], cells[4],
                     cells[5], g["epochs"], fmt_duration(g.get("wall_s"))],
            curve={k: curve[k] for k in ("epochs", "mean", "low", "high")}, config=config,
            run_dirs=[home / rid for rid in runs]))
    return out


def diff_rows(items: list[Compared]) -> list[tuple[str, list[Any]]]:
    """Config keys whose values differ between the items."""
    return config_diff([i.config for i in items])


# ---------------------------------------------------------------- provenance


def run_provenance(run_dir: Path) -> dict | None:
    """The provenance of the run's latest `start` event (None: none recorded)."""
    found = (latest_start(run_dir) or {}).get("provenance")
    return found if isinstance(found, dict) else None


PER_RUN = ("command", "job.job_id")  # name each run (its id, study, group): they always differ, so left out
CELL_WIDTH = 48


def _cell(text: str) -> str:
    return text if len(text) <= CELL_WIDTH else text[:CELL_WIDTH - 1] + "…"


def provenance_rows(per_item: list[list[dict | None]]) -> list[tuple[str, list[str]]]:
    """(key, one cell per item) for the provenance keys whose values are not the same across every
    run compared (`differences` decides which); an item of several runs (a group) shows each of
    its values once (`a | b`), shortened. The engine's command line and job id are left out:
    they name each run, so they always differ (the launcher's command is kept)."""
    provs = [p or {} for runs in per_item for p in runs]
    if len(provs) < 2:
        return []
    keys: set[str] = set()
    for other in provs[1:]:
        keys |= differences(provs[0], other).keys()
    keys -= set(PER_RUN)
    flat = [[flatten(p or {}) for p in runs] for runs in per_item]
    rows = []
    for key in sorted(keys):
        cells = []
        for runs in flat:
            values = list(dict.fromkeys(fmt_value(f.get(key)) for f in runs)) or ["-"]
            cells.append(_cell(" | ".join(values)) if len(values) <= 3 else f"{len(values)} values")
        rows.append((key, cells))
    return rows
