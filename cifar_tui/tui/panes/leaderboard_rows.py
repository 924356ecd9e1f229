"""The leaderboard's rows as the tables draw them: the columns of the runs table and of the groups
table (with a baseline: the vs columns), each row's values (compared to decide what to redraw)
and its cells, and the order of a sort (CIFAR-100 ranked apart from synthetic)."""
from __future__ import annotations

import re

from rich.text import Text

from ...table_rows import fmt_acc, fmt_ref, group_cells, vs_cells
from ..widgets.table_sync import Column
from ..widgets.text import cell, status_text

# priority: 0 always shown; the larger, the sooner a column goes on a narrow terminal
LB_COLUMNS = (Column("mark", " "), Column("rank", "#"), Column("config", "config"), Column("data", "data", 8),
              Column("best_acc", "best acc"), Column("top5", "top-5", 2), Column("reference", "ref acc", 3),
              Column("diff", "diff", 3), Column("best_epoch", "best ep", 7), Column("epochs", "epochs", 5),
              Column("wall_s", "wall", 4), Column("status", "status", 1), Column("run_id", "run id", 6, elastic=True))
LB_DESC_FIRST = {"best_acc", "top5", "reference", "diff", "wall_s", "best_epoch", "epochs"}
# one row per group; the group's settings last: on a narrow terminal the figures stay in view
GROUP_COLUMNS = (Column("mark", " "), Column("rank", "#"), Column("config", "config"), Column("data", "data", 8),
                 Column("n", "n"), Column("mean_acc", "mean ± std"), Column("ci95", "95% interval", 1),
                 Column("reference", "ref acc", 4), Column("ref_in_ci", "inside", 3), Column("diff", "diff", 4),
                 Column("epochs", "epochs", 6), Column("wall_s", "wall", 7), Column("settings", "group", 2, elastic=True))
# with a baseline group: each group's difference to it, before its settings
VS_COLUMNS = (Column("vs_diff", "vs baseline [95%]", 1), Column("vs_p", "p", 5), Column("vs_verdict", "verdict", 1),
              Column("vs_seeds", "seeds", 6))
GROUP_VS_COLUMNS = GROUP_COLUMNS[:-1] + VS_COLUMNS + GROUP_COLUMNS[-1:]
GROUP_DESC_FIRST = {"n", "mean_acc", "ci95", "reference", "diff", "wall_s", "epochs", "vs_diff", "vs_seeds"}
VERDICT_STYLE = {"better": "bold green", "worse": "bold red", "baseline": "bold yellow"}


def lb_values(r: dict, marked: bool) -> tuple:
    return (marked, (r["rank"], r["data"] != "cifar100"), r["config"], r["data"], r["best_acc"], r.get("top5"),
            fmt_ref(r["reference"], r.get("ref_kind")), r["diff"], r["best_epoch"], r["epochs"], r["wall"],
            r["status"] or "?", r["run_id"])


def lb_cells(_key: str, values: tuple) -> list:
    marked, (rank, syn), config, data, best_acc, top5, reference, diff, best_epoch, epochs, wall, status, run_id = values
    return [
        Text("●", style="bold magenta") if marked else Text(" "),
        Text(f"S{rank}" if syn else str(rank), style="magenta" if syn else "bold"),
        cell(config),
        Text("synthetic", style="italic magenta") if syn else Text(data, style="cyan"),
        Text(fmt_acc(best_acc), style="bold"),
        cell(fmt_acc(top5)),
        Text(reference, style="italic" if reference.startswith("goal") else ""),
        Text("-" if diff is None else f"{diff:+.2f}", style="" if diff is None else ("green" if diff >= 0 else "red")),
        cell(str(best_epoch or "-")), cell(epochs), cell(wall), status_text(status), cell(run_id),
    ]


def group_key(g: dict) -> str:
    """A group row's key: its data source and group (one group may have runs on both sources)."""
    return f"{g['data']}\t{g['group']}"


def group_values(g: dict, rank: int, marked: bool, with_vs: bool = False) -> tuple:
    """The figures as `cifar-tui leaderboard --by group [--vs GROUP]` prints them (report.group_cells,
    report.vs_cells)."""
    label, n, mean, ci, seed, inside, diff, epochs, wall = group_cells(g)
    vs = tuple(vs_cells(g)) if with_vs else ()
    return (marked, (rank, g["data"] != "cifar100"), g["config"] or "?", g["data"], n, mean, ci, seed,
            (inside, g["ref_in_ci"]), (diff, g["diff"]), epochs, wall, *vs, label)


def group_row_cells(_key: str, values: tuple) -> list:
    marked, (rank, syn), config, data, n, mean, ci, seed, (inside, ok), (diff, d), epochs, wall = values[:12]
    cells = [
        Text("●", style="bold magenta") if marked else Text(" "),
        Text(f"S{rank}" if syn else str(rank), style="magenta" if syn else "bold"),
        cell(config),
        Text("synthetic", style="italic magenta") if syn else Text(data, style="cyan"),
        cell(n), Text(mean, style="bold"), Text(ci, style="yellow" if ci.endswith(("wide", "clamped")) else ""),
        Text(seed, style="italic" if seed.startswith("goal") else ""),
        Text(inside, style="" if ok is None else ("green" if ok else "yellow")),
        Text(diff, style="" if d is None else ("green" if d >= 0 else "red")),
        cell(epochs), cell(wall),
    ]
    if len(values) > 13:  # against a baseline group
        vs_diff, p, verdict, seeds = values[12:16]
        cells += [cell(vs_diff), cell(p), Text(verdict, style=VERDICT_STYLE.get(verdict.split(" (")[0], "dim")),
                  cell(seeds)]
    return cells + [cell(values[-1])]


def _sortable(v):
    return v.lower() if isinstance(v, str) else v


def sort_order(rows: list[dict], col: str, desc: bool, id_key: str = "run_id") -> list[str]:
    """Row ids sorted by `col` within each part (CIFAR-100 first, then synthetic); rows without
    a value for the column go last in their part."""

    def key(r: dict):
        v = r.get(col)
        if col == "epochs":  # "3/20" (a run), "20" or "2-3" (a group): the epochs done
            m = re.match(r"\d+", str(v))
            v = int(m.group()) if m else 0
        return _sortable(v)

    out: list[str] = []
    for synthetic in (False, True):
        part = [r for r in rows if (r["data"] != "cifar100") == synthetic]
        present = [r for r in part if r.get(col) is not None]
        present.sort(key=key, reverse=desc)
        out += [r[id_key] for r in present] + [r[id_key] for r in part if r.get(col) is None]
    return out
