"""What the study commands print besides their runs: the groups of a study or the workspace
(`leaderboard --by group [--vs GROUP]`, and after a study) and a plan's estimated time."""
from __future__ import annotations

import sys
from typing import Optional

from engine.errors import ConfigError

from .common import console, err_console, fail, open_store, state


def print_groups(study: Optional[str], fmt: str = "table", keep: Optional[int] = None, vs: Optional[str] = None) -> None:
    """One row per group (of the workspace, or of a study) with n, mean ± std and the 95% interval;
    `keep`: at most that many of each data source (the best); `vs`: a group to hold the others
    against (difference, interval, p-value, verdict, seeds to resolve)."""
    from ..table_rows import group_cells, groups_text, vs_cells
    from ..studies import find_group, groups_title, leaderboard_groups, vs_baseline
    from . import listing

    store = open_store()
    try:
        if study and store.study(study) is None and not store.study_runs(study):
            fail(f"--study {study}: no such study in {state.ws.home} (see `cifar-tui studies`)")
        groups = leaderboard_groups(store, study)
    finally:
        store.close()
    baseline = None
    if vs is not None:
        try:
            key = find_group(groups, vs)
        except ConfigError as exc:
            fail(str(exc))
        vs_baseline(groups, key)
        baseline = next(g for g in groups if g["group"] == key)
    if fmt != "table":
        sys.stdout.write(groups_text(groups if keep is None else
                                     [g for s in ("cifar100", "synthetic") for g in
                                      [g for g in groups if g["data"] == s][:keep]], fmt, vs=baseline))
        return
    labels = ["group", "n", "mean ± std", "95% interval", "ref acc", "inside", "diff", "epochs", "wall"]
    if baseline is not None:
        labels += [f"vs {baseline['label']}: diff [95%]", "p", "verdict", "seeds to resolve"]
    columns = [listing.Column(c) for c in labels]
    for source in ("cifar100", "synthetic"):
        part = [g for g in groups if g["data"] == source]
        if not part:
            continue
        title = "Groups (CIFAR-100)" if source == "cifar100" else "Synthetic data (not CIFAR-100, not compared with the seed)"
        shown = part[:keep]
        listing.print_table(console, title + (f", study {study}" if study else "") + f": {groups_title(part)}",
                            columns, [group_cells(g) + (vs_cells(g) if baseline is not None else []) for g in shown])
        listing.hidden_line(console, len(part) - len(shown), "lower-ranked group", "best")
    if baseline is not None and groups:
        console.print("[dim]diff: this group's mean minus the baseline's, 95% interval (Welch; paired where both ran the "
                      "same seeds); verdict at p < 0.05; seeds to resolve: runs per group for 80% power at the "
                      "observed difference[/]", highlight=False)
    if not groups:
        console.print("no results yet" + (f" in study {study}" if study else ""))


class _EmptyStore:
    """No workspace yet (a dry run creates none): an empty store in memory, so no history."""

    def __init__(self):
        import sqlite3

        from engine.record.store import SCHEMA

        self.conn = sqlite3.connect(":memory:")
        self.conn.executescript(SCHEMA)

    def close(self) -> None:
        self.conn.close()


def print_cost(cfgs, opts, as_json: bool, *, prefix: str = "") -> None:
    """The plan's estimated time on this machine's devices (studies.plan_cost), after the plan; not
    with --json (machine-readable output, which a probe of seconds would only hold up)."""
    from ..gpus import default_max_parallel, visible_gpus
    from ..studies import plan_cost

    if as_json:
        return
    out = console
    if opts.launcher.value == "slurm":
        out.print("estimated time: not estimated for a SLURM cluster (its GPUs are not this machine's)",
                  highlight=False)
        return
    gpus = visible_gpus()
    parallel = opts.max_parallel or default_max_parallel(gpus)
    store = open_store() if (state.ws.home / "cifar_tui.db").is_file() else _EmptyStore()  # a plan creates nothing
    try:
        line = plan_cost(store, list(cfgs), parallel, probe=True, gpus=gpus,
                         say=lambda text: err_console.print(f"[dim]{text}[/]", highlight=False))
    finally:
        store.close()
    out.print(prefix + line, highlight=False, soft_wrap=True)
