"""`cifar-tui report`: the seed's results table, regenerated, with our figures beside it.

One row per group of each experiment of the seed's write-up (its Config File, Description and
Accuracy, in its order), then our columns from `studies.group_stats` (the numbers `leaderboard
--by group` prints): mean ± std of the best test accuracy, n, the 95% interval, the difference
from the seed; then the difference to our own baseline group (resnet18_baseline) beside the
seed's, with its interval, p-value and verdict (`stats.compare`, as `leaderboard --vs`); epochs,
wall time, one line of interpretation, and a link to the group's own figure. Then the seed's
claims, each confirmed, contradicted or not resolved by our runs; and a figure of every group's
mean with its interval bar beside the seed's number. Groups are named as everywhere
(cifar_tui.names). Synthetic-data results say so at the top and are never compared with the
seed's figures.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from engine.config import ConfigError

from .names import name_groups, settings
from .table_rows import fmt_acc, fmt_ci, fmt_duration, fmt_p, fmt_ref
from .report_figures import figure_name, group_figure, means_figure
from .stats import BETTER, UNRESOLVED, WORSE, compare
from .studies import group_stats

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


SEED_FIGURES = {name: acc for name, _, acc in SEED_EXPERIMENTS if acc is not None}
BASELINE = "resnet18_baseline"


@dataclass(frozen=True)
class Claim:
    """What the seed's write-up concludes from two of its rows: `config` against `baseline` is
    `expect` (better, worse, or "not better": it does not help)."""

    text: str
    config: str
    baseline: str
    expect: str


CLAIMS: tuple[Claim, ...] = (
    Claim("augmentation hurts", "resnet18_augment", BASELINE, WORSE),
    Claim("augmentation hurts", "resnet18_augment_fresh", BASELINE, WORSE),
    Claim("weight decay 0.1 hurts", "resnet18_baseline_wd01", BASELINE, WORSE),
    Claim("label smoothing helps", "resnet18_baseline_lbsmooth", BASELINE, BETTER),
    Claim("ImageNet pretraining helps", "resnet18_pretrained", BASELINE, BETTER),
    Claim("ArcFace helps", "resnet18_pretrained_arcface", "resnet18_pretrained", BETTER),
    Claim("224x224 input helps", "resnet18_pretrained_arcface_224x224", "resnet18_pretrained_arcface", BETTER),
    Claim("224x224 input helps", "resnet50_pretrained_arcface_224x224", "resnet50_pretrained_arcface", BETTER),
    Claim("ResNet-50 helps", "resnet50_pretrained_arcface", "resnet18_pretrained_arcface", BETTER),
    Claim("ResNet-50 helps", "resnet50_pretrained_arcface_224x224", "resnet18_pretrained_arcface_224x224", BETTER),
    Claim("distillation does not help", "resnet18_pretrained_arcface_kd", "resnet18_pretrained_arcface", "not better"),
)
CONFIRMED, CONTRADICTED = "confirmed", "contradicted"


def interpretation(g: dict | None, seed_acc: float | None, kind: str | None = "seed") -> str:
    """One line: where the reference (the seed's figure, a paper's, our estimate or our goal) lies
    against our 95% interval."""
    if g is None or not g["n"]:
        return "not run" if g is None else "no completed run yet"
    if g["data"] != "cifar100":
        return "synthetic data: not comparable with the seed"
    whose = {"seed": "the seed's", "paper": "the published", "estimate": "our estimated"}.get(kind, "the reference")
    if seed_acc is None:
        return "the seed reports no figure" if kind == "seed" else "no reference figure"
    if kind == "goal":
        gap = g["mean_acc"] - seed_acc
        return f"our goal {seed_acc:.2f}: " + ("met" if gap >= 0 else f"not met, {-gap:.2f} below")
    if g["ci95"] is None:
        return f"one run ({fmt_acc(g['mean_acc'])}): no interval; run more seeds (--seeds N, or --seeds auto)"
    low, high = g["ci95"]
    wide = " (from 2 runs: a wide interval)" if g.get("ci95_wide") else ""
    if low <= seed_acc <= high:
        return f"{whose} {seed_acc:.2f} lies inside our 95% interval: consistent{wide}"
    side = "below" if seed_acc < low else "above"
    return (f"{whose} {seed_acc:.2f} lies {side} our 95% interval: ours is "
            f"{'higher' if side == 'below' else 'lower'} by {abs(g['mean_acc'] - seed_acc):.2f}{wide}")


def baseline_for(g: dict, candidates: list[dict]) -> dict | None:
    """The group `g` is held against: of the candidates on g's data source, the one with the same
    settings (the same --set values and data), else the one with the most runs."""
    same_source = [b for b in candidates if b["data"] == g["data"]]
    own = settings(g["group"], g["config"])
    exact = [b for b in same_source if settings(b["group"], b["config"]) == own]
    pool = exact or same_source
    return max(pool, key=lambda b: b["n"], default=None)


def claim_status(expect: str, vs: dict | None, data: str) -> str:
    if vs is None:
        return "not run"
    if data != "cifar100":
        return "not judged (synthetic data)"
    if vs["verdict"] == UNRESOLVED:
        if expect == "not better":
            return "not resolved (no difference shown; that alone does not show there is none)"
        return UNRESOLVED
    holds = vs["verdict"] == expect if expect != "not better" else vs["verdict"] == WORSE
    return CONFIRMED if holds else CONTRADICTED


def judge_claims(stats: list[dict]) -> list[dict]:
    """Each claim against our groups (CIFAR-100 first): claim, config, baseline, data, the seed's
    two figures, stats.compare of our groups, status (confirmed / contradicted / not resolved /
    not run)."""
    by_config: dict[str, list[dict]] = {}
    for g in stats:
        by_config.setdefault(g["config"], []).append(g)
    out = []
    for c in CLAIMS:
        seed = (SEED_FIGURES.get(c.config), SEED_FIGURES.get(c.baseline))
        ours = [g for g in by_config.get(c.config, []) if g["n"]]
        if not ours:
            out.append({"claim": c, "data": None, "group": None, "base": None, "seed": seed, "vs": None,
                        "status": "not run"})
            continue
        for g in ours:
            base = baseline_for(g, [b for b in by_config.get(c.baseline, []) if b["n"]])
            vs = compare(base["seeds"], g["seeds"]) if base is not None else None
            out.append({"claim": c, "data": g["data"], "group": g, "base": base, "seed": seed, "vs": vs,
                        "status": claim_status(c.expect, vs, g["data"])})
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


def _vs_text(vs: dict | None) -> tuple[str, str, str]:
    """(diff [95%], p and test, verdict with the seeds that would resolve it)."""
    if vs is None:
        return "-", "-", "-"
    diff = "-" if vs["diff"] is None else f"{vs['diff']:+.2f}"
    if vs["ci"] is not None:
        diff += " " + fmt_ci(vs["ci"], vs["clamped"], signed=True)
    p = fmt_p(vs["p"]) + (f" ({vs['test']})" if vs["test"] else "")
    verdict = vs["verdict"] if vs["test"] else f"{vs['verdict']}: {vs['why']}"
    if vs["verdict"] == UNRESOLVED and vs["seeds"] is not None:
        verdict += f"; ~{vs['seeds']} seeds per group would resolve it"
    return diff, p, verdict


def _cells(cells: list[str]) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in cells) + " |"


def _ours(g: dict) -> tuple[str, str]:
    ours = "-" if g["mean_acc"] is None else fmt_acc(g["mean_acc"]) + (
        f" ± {g['std_acc']:.2f}" if g["std_acc"] is not None else "")
    return ours, fmt_ci(g["ci95"], g.get("ci95_clamped", False), g.get("ci95_wide", False))


def write_report(store, out: Path, *, study: str | None = None) -> dict:
    """Write the Markdown report (and its PNGs in <out stem>_files/). Returns {"path", "figures",
    "rows": [{config, seed_acc, groups}], "claims", "synthetic"}."""
    out = _check_out(out)
    runs = store.study_runs(study) if study else store.runs()
    if study and not runs and store.study(study) is None:
        raise ConfigError(f"--study {study}: no such study in {store.home} (see `cifar-tui studies`)")
    stats = group_stats(runs)
    names = name_groups([g["group"] for g in stats], {g["group"]: g["config"] for g in stats})
    by_config: dict[str, list[dict]] = {}
    for g in stats:
        by_config.setdefault(g["config"], []).append(g)
    sources = {g["data"] for g in stats}
    figures_dir = out.with_name(out.stem + "_files")
    figures: list[Path] = []

    def figure(g: dict) -> str:
        if not (g["runs"] or g["unfinished"]):
            return ""
        figures_dir.mkdir(exist_ok=True)
        path = group_figure(store, g, figures_dir / figure_name(g), names.title)
        figures.append(path)
        return f"[png]({figures_dir.name}/{path.name})"

    def suffix(g: dict) -> str:
        extra = g["label"][len(g["config"]):].strip() if g["label"].startswith(g["config"]) else g["label"]
        extra = "" if extra == "(defaults)" and len(by_config[g["config"]]) == 1 else extra
        return (f" ({extra})" if extra else "") + (" [synthetic]" if g["data"] != "cifar100" else "")

    title = f"Study {study}" if study else "All runs"
    lines = [f"# {title}: the seed's results, regenerated", ""]
    if sources and sources <= {"synthetic"}:
        lines += [SYNTHETIC_NOTE, ""]
    elif "synthetic" in sources:
        lines += ["Some groups ran on **synthetic data** (marked below): they are not compared with the seed.", ""]
    if names.title:
        lines += [f"Every group: {names.title}.", ""]
    lines += ["Ours: the best test accuracy over epochs of each completed run, as mean ± sample standard deviation "
              "over n runs (seeds), with a 95% Student's t interval of the mean (cut to [0, 100] where it would leave "
              "it: *clamped*; from 2 runs: *wide*; from 1 run: none). Diff: our mean minus the seed's figure. "
              f"Vs baseline: the difference to {BASELINE} (the seed's, and ours with its 95% interval: Welch's t-test, "
              "or the paired test where both groups ran the same seeds); the verdict is better or worse at p < 0.05, "
              "else not resolved, with the seeds per group that would resolve the observed difference at 80% power. "
              "Epochs and wall time: per run.", "",
              "| Config File | Description | Accuracy (seed) | Ours (mean ± std) | n | 95% interval | Diff | "
              "Seed vs baseline | Ours vs baseline [95%] | p | Verdict | Epochs | Wall time | Interpretation | Curves |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    rows = []
    seed_base = SEED_FIGURES[BASELINE]
    baselines = [b for b in by_config.get(BASELINE, []) if b["n"]]
    for name, description, seed_acc in SEED_EXPERIMENTS:
        groups = by_config.pop(name, [])
        rows.append({"config": name, "seed_acc": seed_acc, "groups": groups})
        seed_text = "(not reported)" if seed_acc is None else f"{seed_acc:.2f}%"
        seed_vs = "-" if seed_acc is None or name == BASELINE else f"{seed_acc - seed_base:+.2f}"
        if not groups:
            lines.append(_cells([f"{name}.yaml", description, seed_text, "not run", "0", "-", "-", seed_vs, "-", "-",
                                 "-", "-", "-", "not run", ""]))
            continue
        for g in groups:
            ours, ci = _ours(g)
            base = None if name == BASELINE else baseline_for(g, baselines)
            vs = compare(base["seeds"], g["seeds"]) if base is not None and g["n"] else None
            diff, p, verdict = ("baseline", "-", "-") if name == BASELINE else _vs_text(vs)
            g_diff = "-" if g["diff"] is None else f"{g['diff']:+.2f}"
            lines.append(_cells([f"{name}.yaml{suffix(g)}", description, seed_text, ours, str(g["n"]), ci, g_diff,
                                 seed_vs, diff, p, verdict, g["epochs"], fmt_duration(g["wall_s"]),
                                 interpretation(g, seed_acc), figure(g)]))
    if by_config:  # our own recipes (and other groups) in this study
        lines += ["", "Other experiments (not in the seed's table):", "",
                  "| Config | Ref acc | Ours (mean ± std) | n | 95% interval | Diff | Epochs | Wall time | "
                  "Interpretation | Curves |", "|---|---|---|---|---|---|---|---|---|---|"]
        for name, groups in sorted(by_config.items()):
            for g in groups:
                ours, ci = _ours(g)
                g_diff = "-" if g["diff"] is None else f"{g['diff']:+.2f}"
                lines.append(_cells([f"{name}{suffix(g)}", fmt_ref(g["reference"], g.get("ref_kind")), ours,
                                     str(g["n"]), ci, g_diff, g["epochs"], fmt_duration(g["wall_s"]),
                                     interpretation(g, g["reference"], g.get("ref_kind")), figure(g)]))
    claims = judge_claims(stats)
    lines += _claim_lines(claims, sources)
    for source, label in (("cifar100", "CIFAR-100"), ("synthetic", "synthetic data")):
        part = [g for g in stats if g["data"] == source and g["n"]]
        if not part:
            continue
        figures_dir.mkdir(exist_ok=True)
        path = means_figure(part, figures_dir / f"means_{source}.png",
                            f"Best test accuracy, mean and 95% interval per group ({label})"
                            + ("; the seed's figure beside it" if source == "cifar100" else ""),
                            SEED_FIGURES if source == "cifar100" else None)
        figures.append(path)
        lines += ["", f"![The groups' means ({label})]({figures_dir.name}/{path.name})"]
    lines.append("")
    out.write_text("\n".join(lines))
    return {"path": out, "figures": figures, "rows": rows, "claims": claims,
            "synthetic": sources <= {"synthetic"} and bool(sources)}


def _claim_lines(claims: list[dict], sources: set[str]) -> list[str]:
    lines = ["", "## The seed's claims", "",
             "Each claim is judged from our CIFAR-100 runs: *confirmed* when our difference has the claimed sign at "
             "p < 0.05, *contradicted* when it has the other sign at p < 0.05, *not resolved* otherwise."
             + (" Our runs here are on synthetic data: their differences are shown, but judge no claim."
                if sources <= {"synthetic"} and sources else ""), "",
             "| Claim | Compared | Seed | Ours: diff [95%] | p | Verdict | Claim is |", "|---|---|---|---|---|---|---|"]
    for row in claims:
        c = row["claim"]
        a, b = row["seed"]
        seed = "-" if a is None or b is None else f"{a:.2f} vs {b:.2f} ({a - b:+.2f})"
        compared = f"{c.config} vs {c.baseline}"
        if row["group"] is not None and row["group"]["label"] != c.config:
            compared += f" ({row['group']['label']})"
        if row["data"] == "synthetic":
            compared += " [synthetic]"
        diff, p, verdict = _vs_text(row["vs"])
        lines.append(_cells([c.text, compared, seed, diff, p, verdict, row["status"]]))
    return lines
