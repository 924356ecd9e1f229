"""What a study's tab shows, as plain data (no Textual): its groups x seeds grid, each cell a run
(its status and best accuracy so far), each group's statistics (studies.group_stats) and its
difference to the baseline group (studies.vs_baseline), and the time the study has left.

`study_grid(rows, queued, ...)` is recomputed from the RunsIndex's rows of the study when one of
them changes; the pane redraws only the cells whose values changed (TableSync), so a study of
1,000 runs stays cheap (`cifar-tui bench --section study`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from engine.record.status import COMPLETED, LIVE, QUEUED, RESUMABLE

from ..names import name_groups
from ..studies import group_of, group_stats, run_seed, vs_baseline
from ..sweep import SEED_KEY, override_key


@dataclass(frozen=True)
class Cell:
    """One run of the grid: status, best accuracy so far, epochs done of all."""

    run_id: str | None
    status: str
    best: float | None = None
    done: int = 0
    total: int | None = None


@dataclass
class StudyGrid:
    study: str
    groups: list[str]                     # full keys, in the order listed
    stats: dict[str, dict]                # group -> its group_stats row (CIFAR-100 row first where both)
    seeds: list[int]                      # the grid's columns
    cells: dict[tuple[str, int], Cell]
    labels: dict[str, str]                # group -> its short name (cifar_tui.names)
    title: str                            # what every group shares
    counts: dict[str, int] = field(default_factory=dict)   # status -> runs
    eta_s: float | None = None            # time left for the runs there are (None: unknown)
    baseline: str | None = None

    @property
    def runs(self) -> int:
        return sum(self.counts.values())


def _queued_seed(item: dict) -> int | None:
    for o in reversed(item.get("overrides") or []):
        if override_key(o) == SEED_KEY:
            try:
                return int(o.partition("=")[2])
            except ValueError:
                return None
    return None


def time_left(rows: list[dict], queued: int, parallel: int) -> float | None:
    """Seconds the study's runs still need, spread over `parallel` slots: each unfinished run's
    epochs left times the study's seconds per epoch (from every run that finished an epoch), and
    each queued run a whole run. None when no run has finished an epoch yet."""
    per_epoch = [float(r["wall_s"]) / r["epochs_done"] for r in rows
                 if r.get("epochs_done") and r.get("wall_s")]
    if not per_epoch:
        return None
    epoch_s = sum(per_epoch) / len(per_epoch)
    totals = [int(r["epochs_total"]) for r in rows if r.get("epochs_total")]
    typical = max(set(totals), key=totals.count) if totals else 1
    left = sum(max(0, int(r.get("epochs_total") or typical) - int(r.get("epochs_done") or 0))
               for r in rows if r["status"] in LIVE or r["status"] == QUEUED or r["status"] in RESUMABLE)
    left += queued * typical
    return left * epoch_s / max(1, parallel)


def study_grid(study: str, rows: list[dict], queued: list[dict] = (), *, baseline: str | None = None,
               parallel: int = 1, groups: list[str] | None = None) -> StudyGrid:
    """The grid of a study from its run rows (RunsIndex.group_rows(study)) and its queued items
    (seed from their overrides); `groups`: the groups it plans (shown before they ran)."""
    stats_rows = group_stats(rows)
    if baseline is not None and any(g["group"] == baseline for g in stats_rows):
        vs_baseline(stats_rows, baseline)
    else:
        baseline = None
    stats: dict[str, dict] = {}
    for g in stats_rows:  # a group on both sources: its CIFAR-100 row (listed first)
        stats.setdefault(g["group"], g)
    order = list(dict.fromkeys([*(groups or []), *stats]))
    cells: dict[tuple[str, int], Cell] = {}
    counts: dict[str, int] = {}
    for r in sorted(rows, key=lambda r: r.get("started_at") or 0):
        seed = run_seed(r)
        key = (group_of(r), seed if seed is not None else -1)
        before = cells.get(key)
        if before is not None and before.status == COMPLETED:
            continue  # a seed run twice: its completed run stands
        cells[key] = Cell(r["run_id"], r["status"], r.get("best_acc"), int(r.get("epochs_done") or 0),
                          r.get("epochs_total"))
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    waiting = 0
    for item in queued:
        group = item.get("group_key")
        if not group or item.get("resume_of"):
            continue
        seed = _queued_seed(item)
        key = (group, seed if seed is not None else -1)
        if key not in cells:
            cells[key] = Cell(None, QUEUED)
            counts[QUEUED] = counts.get(QUEUED, 0) + 1
            waiting += 1
        if group not in order:
            order.append(group)
    seeds = sorted({s for _, s in cells})
    names = name_groups(order, {g: s["config"] for g, s in stats.items() if s.get("config")})
    return StudyGrid(study, order, stats, seeds, cells, names.labels, names.title, counts,
                     time_left(rows, waiting, parallel), baseline)
