"""`cifar-tui report`: the seed's results table, regenerated, with our figures beside it.

One row per experiment of the seed's write-up (its Config File, Description and Accuracy, in
its order), then our columns from `studies.group_stats` (the numbers `leaderboard --by group`
prints): mean ± std of the best test accuracy, n, the 95% interval, the difference from the
seed, epochs, wall time, and one line saying whether the seed's figure lies inside our
interval. Each experiment that ran gets a PNG of its test-accuracy curves (every run thin, the
mean with a ±1 std band), linked from the Markdown. Synthetic-data results say so at the top
and are never compared with the seed's figures.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from engine.config import ConfigError

from .report import fmt_acc, fmt_duration
from .studies import group_curve, group_stats

# The seed's summary table (DocsaidLab/cifar100_training_demo, "Summary of Experiments and
# Results"), in its order, plus the multi-scale run it describes without a figure.
SEED_EXPERIMENTS: tuple[tuple[str, str, float | None], ...] = (
    ("resnet18_baseline", "ResNet-18, no pretraining, AdamW (lr=0.001), WD=0.0001", 44.26),
    ("resnet18_augment", "Added Albumentations data augmentation (rotation, dropout, flips)", 36.48),
    ("resnet18_baseline_wd01", "ResNet-18, no pretraining, Weight Decay set to 0.1", 40.12),
    ("resnet18_baseline_lbsmooth", "ResNet-18, no pretraining, Label Smoothing = 0.1", 44.81),
    ("resnet18_pretrained", "ResNet-18, ImageNet pretrained", 56.70),
    ("resnet18_pretrained_arcface", "ResNet-18 pretrained + Margin Loss (ArcFace)", 57.92),
    ("resnet18_pretrained_arcface_224x224", "ResNet-18 pretrained + Margin Loss, input image resized to 224×224", 79.57),
    ("resnet50_pretrained_arcface", "ResNet-50 pretrained + Margin Loss, input remains 32×32", 61.76),
    ("resnet50_pretrained_arcface_224x224", "ResNet-50 pretrained + Margin Loss, input image 224×224", 81.21),
    ("resnet18_pretrained_arcface_kd", "Knowledge Distillation (Teacher: ResNet-50 224×224; Student: ResNet-18 32×32)", 57.37),
    ("resnet18_pretrained_arcface_mst", "Multi-scale training (each image at 32 or 64), tested at 32", None),
)
SEED_NAMES = tuple(name for name, _, _ in SEED_EXPERIMENTS)
# Run by `reproduce` beside the seed's experiment each one varies, so that the seed's claim can be
# judged both ways (the report lists them under "Other experiments"): config -> the seed's.
BESIDE_THE_SEED: dict[str, str] = {"resnet18_augment_fresh": "resnet18_augment"}  # augmentation drawn afresh
REPRODUCE_NAMES = tuple(n for name in SEED_NAMES
                        for n in (name, *(extra for extra, seed in BESIDE_THE_SEED.items() if seed == name)))
KD_TEACHERS = {"resnet18_pretrained_arcface_kd": "resnet50_pretrained_arcface_224x224"}
SYNTHETIC_NOTE = ("**Synthetic data**: these runs trained on generated CIFAR-100-shaped images, not on CIFAR-100. "
                  "Their accuracies say nothing about the seed's figures and are not compared with them.")


def interpretation(g: dict | None, seed_acc: float | None) -> str:
    """One line: is the seed's figure inside our 95% interval?"""
    if g is None or not g["n"]:
        return "not run" if g is None else "no completed run yet"
    if g["data"] != "cifar100":
        return "synthetic data: not comparable with the seed"
    if seed_acc is None:
        return "the seed reports no figure"
    if g["ci95"] is None:
        return f"one run ({fmt_acc(g['mean_acc'])}): no interval; run more seeds (--seeds N)"
    low, high = g["ci95"]
    if low <= seed_acc <= high:
        return f"the seed's {seed_acc:.2f} lies inside our 95% interval: consistent"
    side = "below" if seed_acc < low else "above"
    return (f"the seed's {seed_acc:.2f} lies {side} our 95% interval: ours is "
            f"{'higher' if side == 'below' else 'lower'} by {abs(g['mean_acc'] - seed_acc):.2f}")


def _figure_name(group: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", group).strip("_")[:120] + ".png"


def distinguishing_labels(groups: list[str]) -> list[str]:
    """Each group by what sets it apart from the others (the overrides they do not share)."""
    token_sets = [g.split(" ") for g in groups]
    shared = set.intersection(*(set(t) for t in token_sets)) if len(groups) > 1 else set()
    labels = [" ".join(t for t in tokens if t not in shared) for tokens in token_sets]
    return [label[:80] or group.split(" ")[0] for label, group in zip(labels, groups)]


def plot_group(store, groups: list[dict], title: str, out: Path) -> Path:
    """Test accuracy per epoch of each group's runs (thin) and mean with a ±1 std band (thick)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    names = distinguishing_labels([g["group"] for g in groups])
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=100)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, g in enumerate(groups):
        color = colors[i % len(colors)]
        curve = group_curve(store, g["runs"] or g["unfinished"])
        xs = curve["epochs"]
        for values in curve["runs"].values():
            pts = [(x, v) for x, v in zip(xs, values) if v is not None]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], color=color, alpha=0.35, lw=0.8)
        ax.fill_between(xs, curve["low"], curve["high"], color=color, alpha=0.18, lw=0)
        label = f"{names[i]}  (n={g['n']}{', synthetic' if g['data'] != 'cifar100' else ''})"
        ax.plot(xs, curve["mean"], color=color, lw=2, label=label, marker="o" if len(xs) < 30 else None, ms=3)
    ax.set(title=title, xlabel="epoch", ylabel="test accuracy %")
    ax.grid(alpha=0.3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    try:
        fig.savefig(out)
    finally:
        plt.close(fig)
    return out


def _check_out(out: Path) -> Path:
    out = Path(out)
    if out.suffix.lower() != ".md":
        raise ConfigError(f"--out {out}: expected a Markdown file name ending in .md")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise ConfigError(f"--out {out}: directory {parent} does not exist")
    if out.is_dir() or not os.access(parent, os.W_OK):
        raise ConfigError(f"--out {out}: not writable")
    return out


def write_report(store, out: Path, *, study: str | None = None) -> dict:
    """Write the Markdown report (and its PNGs in <out stem>_files/). Returns {"path", "figures",
    "rows": [{config, seed_acc, groups}], "synthetic"}."""
    out = _check_out(out)
    runs = store.study_runs(study) if study else store.runs()
    if study and not runs and store.study(study) is None:
        raise ConfigError(f"--study {study}: no such study in {store.home} (see `cifar-tui studies`)")
    stats = group_stats(runs)
    by_config: dict[str, list[dict]] = {}
    for g in stats:
        by_config.setdefault(g["config"], []).append(g)
    sources = {g["data"] for g in stats}
    figures_dir = out.with_name(out.stem + "_files")
    title = f"Study {study}" if study else "All runs"
    lines = [f"# {title}: the seed's results, regenerated", ""]
    if sources and sources <= {"synthetic"}:
        lines += [SYNTHETIC_NOTE, ""]
    elif "synthetic" in sources:
        lines += ["Some groups ran on **synthetic data** (marked below): they are not compared with the seed.", ""]
    lines += ["Ours: the best test accuracy over epochs of each completed run, as mean ± sample standard deviation "
              "over n runs (seeds), with a 95% Student's t interval of the mean. Diff: our mean minus the seed's "
              "figure. Epochs and wall time: per run.", "",
              "| Config File | Description | Accuracy (seed) | Ours (mean ± std) | n | 95% interval | Diff | Epochs | "
              "Wall time | Interpretation | Curves |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    rows, figures = [], []
    for name, description, seed_acc in SEED_EXPERIMENTS:
        groups = by_config.pop(name, [])
        rows.append({"config": name, "seed_acc": seed_acc, "groups": groups})
        seed_text = "(not reported)" if seed_acc is None else f"{seed_acc:.2f}%"
        if not groups:
            lines.append(f"| {name}.yaml | {description} | {seed_text} | not run | 0 | - | - | - | - | not run | |")
            continue
        link = ""
        if any(g["runs"] or g["unfinished"] for g in groups):
            figures_dir.mkdir(exist_ok=True)
            path = plot_group(store, groups, name, figures_dir / _figure_name(name))
            figures.append(path)
            link = f"[png]({figures_dir.name}/{path.name})"
        for g in groups:
            lines.append(_row(f"{name}.yaml" + _suffix(g, name), description, seed_text, g,
                              interpretation(g, seed_acc), link))
    if by_config:  # our own recipes (and other groups) in this study
        lines += ["", "Other experiments (not in the seed's table):", "",
                  "| Config | Reference | Ours (mean ± std) | n | 95% interval | Diff | Epochs | Wall time | "
                  "Interpretation | Curves |", "|---|---|---|---|---|---|---|---|---|---|"]
        for name, groups in sorted(by_config.items()):
            figures_dir.mkdir(exist_ok=True)
            path = plot_group(store, groups, name, figures_dir / _figure_name(name))
            figures.append(path)
            for g in groups:
                ref = g["reference"]
                cells = _row(f"{name}{_suffix(g, name)}", None, "-" if ref is None else f"{ref:.2f}%", g,
                             interpretation(g, ref), f"[png]({figures_dir.name}/{path.name})")
                lines.append(cells)
    lines.append("")
    out.write_text("\n".join(lines))
    return {"path": out, "figures": figures, "rows": rows, "synthetic": sources <= {"synthetic"} and bool(sources)}


def _suffix(g: dict, name: str) -> str:
    extra = g["group"][len(name):].strip() if g["group"].startswith(name) else g["group"]
    return (f" ({extra})" if extra else "") + (" [synthetic]" if g["data"] != "cifar100" else "")


def _row(config_cell: str, description: str | None, seed_text: str, g: dict, verdict: str, link: str) -> str:
    ours = "-" if g["mean_acc"] is None else fmt_acc(g["mean_acc"]) + (f" ± {g['std_acc']:.2f}" if g["std_acc"] is not None else "")
    ci = "-" if g["ci95"] is None else f"[{g['ci95'][0]:.2f}, {g['ci95'][1]:.2f}]"
    diff = "-" if g["diff"] is None else f"{g['diff']:+.2f}"
    cells = [config_cell] + ([description] if description is not None else []) + [
        seed_text, ours, str(g["n"]), ci, diff, g["epochs"], fmt_duration(g["wall_s"]), verdict, link]
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"
