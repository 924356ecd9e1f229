"""The report's figures (matplotlib, Agg): one per group, and one of the groups' means.

- ``group_figure``: a group's test accuracy per epoch: each run thin (one colour per seed), the
  mean bold with its ±1 std band; the legend outside the axes, on the right; the group's short
  name in the title and what every group of the report shares under it.
- ``means_figure``: each group's mean best accuracy with its 95% interval as a bar (a clamped one
  drawn to the edge, a wide one dashed), the seed's figure beside it as a diamond where there is
  one, our own goals as a hollow triangle; one row per group, its short name on the left.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

from .studies import group_curve

FIG_DPI = 110
LEGEND_OUTSIDE = {"loc": "upper left", "bbox_to_anchor": (1.01, 1.0), "borderaxespad": 0.0, "frameon": False,
                  "fontsize": 8}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def figure_name(g: dict) -> str:
    """A file name of its own for each group (its config and short name, and a digest of the
    full key, so that two groups never share a figure)."""
    digest = hashlib.sha1(f"{g['data']}\t{g['group']}".encode()).hexdigest()[:6]
    name = g["label"] if g["label"].startswith(g["config"]) else f"{g['config']}_{g['label']}"
    slug = re.sub(r"[^A-Za-z0-9_.=-]+", "_", name).strip("_")[:80]
    return f"{slug}_{digest}.png"


def _wrap(text: str, width: int = 70) -> str:
    words, lines, line = text.split(" "), [], ""
    for w in words:
        if line and len(line) + 1 + len(w) > width:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}".strip()
    return "\n".join([*lines, line])


def group_figure(store, g: dict, out: Path, shared: str = "") -> Path:
    """Test accuracy per epoch of one group's runs, mean and band; written to `out`."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    run_ids = g["runs"] or g["unfinished"]
    curve = group_curve(store, run_ids)
    seeds = {rid: (store.run(rid) or {}).get("seed") for rid in run_ids}
    fig, ax = plt.subplots(figsize=(8.4, 4.2), dpi=FIG_DPI)
    xs = curve["epochs"]
    marker = "o" if len(xs) < 30 else None
    cmap = plt.get_cmap("tab10")
    for i, (rid, values) in enumerate(curve["runs"].items()):
        pts = [(x, v) for x, v in zip(xs, values) if v is not None]
        seed = seeds.get(rid)
        label = f"seed {seed}" if seed is not None else rid[-12:]
        label += "" if rid in g["runs"] else " (unfinished)"
        ax.plot([p[0] for p in pts], [p[1] for p in pts], color=cmap(i % 10), alpha=0.55, lw=0.9, label=label,
                marker=marker, ms=3)
    if xs:
        ax.fill_between(xs, curve["low"], curve["high"], color="black", alpha=0.10, lw=0, label="mean ± 1 std")
        ax.plot(xs, curve["mean"], color="black", lw=2.2, marker=marker, ms=3, label=f"mean of {len(curve['runs'])}")
    synthetic = g["data"] != "cifar100"
    title = f"{g['config']}: {g['label']}" if g["label"] != g["config"] else g["config"]
    ax.set_title(_wrap(title + ("  [synthetic data]" if synthetic else "")), fontsize=10)
    if shared:
        fig.text(0.01, 0.01, _wrap(f"every group: {shared}", 110), fontsize=7, color="0.35")
    ax.set(xlabel="epoch", ylabel="test accuracy %")
    low, high = ax.get_ylim()
    ax.set_ylim(max(0.0, low), min(100.0, high))  # an accuracy: never an axis beyond 0-100
    ax.grid(alpha=0.3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if len(xs) == 1:  # one epoch: a point per run, the axis around it
        ax.set_xlim(xs[0] - 0.5, xs[0] + 0.5)
        ax.set_xticks(xs)
    ax.legend(**LEGEND_OUTSIDE)
    fig.tight_layout(rect=(0, 0.05 if shared else 0, 1, 1))
    try:
        fig.savefig(out)
    finally:
        plt.close(fig)
    return out


def means_figure(groups: list[dict], out: Path, title: str, seed_figures: dict[str, float] | None = None) -> Path:
    """Mean best accuracy with its 95% interval, one row per group, the seed's figure beside it."""
    plt = _pyplot()
    seed_figures = seed_figures or {}
    rows = list(reversed(groups))  # the first group on top
    height = 1.2 + 0.42 * max(1, len(rows))
    fig, ax = plt.subplots(figsize=(9.0, height), dpi=FIG_DPI)
    shown = {"ours": False, "wide": False, "seed": False, "goal": False, "ref": False}
    for y, g in enumerate(rows):
        if g["mean_acc"] is None:
            continue
        low, high = g["ci95"] or (g["mean_acc"], g["mean_acc"])
        wide = bool(g.get("ci95_wide"))
        ax.plot([low, high], [y, y], color="tab:blue", lw=2.2, ls=(0, (2, 1.5)) if wide else "-",
                solid_capstyle="butt", label=None)
        cut = bool(g.get("ci95_clamped"))
        for x in (low, high):
            if cut and x in (0.0, 100.0):  # the interval was cut here: an open end, not a cap
                ax.plot([x], [y], "<" if x == 0.0 else ">", color="tab:blue", ms=7, mfc="white",
                        label="interval cut at 0 or 100" if not shown.get("cut") else None)
                shown["cut"] = True
            else:
                ax.plot([x, x], [y - 0.15, y + 0.15], color="tab:blue", lw=1.4)
        ax.plot([g["mean_acc"]], [y], "o", color="tab:blue", ms=6,
                label="ours: mean, 95% interval" if not shown["ours"] else None)
        shown["ours"] = True
        if wide and not shown["wide"]:
            ax.plot([], [], color="tab:blue", ls=(0, (2, 1.5)), lw=2.2, label="from 2 runs: wide")
            shown["wide"] = True
        seed = seed_figures.get(g["config"]) if g["data"] == "cifar100" else None
        ref, kind = (seed, "seed") if seed is not None else (g.get("reference"), g.get("ref_kind"))
        if ref is None:
            continue
        style = {"seed": ("D", "tab:red", "the seed's figure"), "goal": ("^", "none", "our goal")}.get(
            kind, ("s", "tab:green", "a published figure or estimate"))
        key = kind if kind in ("seed", "goal") else "ref"
        ax.plot([ref], [y + 0.22], style[0], ms=7, mfc=style[1], mec="tab:red" if kind == "seed" else "tab:green",
                label=style[2] if not shown[key] else None)
        shown[key] = True
        ax.annotate(f"{ref:.2f}", (ref, y + 0.22), xytext=(5, 2), textcoords="offset points", fontsize=7)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([_wrap(f"{g['label']}  (n={g['n']})", 40) for g in rows], fontsize=8)
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.set_xlabel("best test accuracy %")
    low, high = ax.get_xlim()
    ax.set_xlim(max(-0.5, low), min(100.5, high))
    ax.set_title(_wrap(title, 110), fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(**LEGEND_OUTSIDE)
    fig.tight_layout()
    try:
        fig.savefig(out)
    finally:
        plt.close(fig)
    return out
