"""The rows and cells of the tables (experiments, runs, the leaderboard, groups) as plain data,
shared by the CLI and the TUI. (The `report` command is study_report.py.)"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from engine.config import ConfigError, ExperimentConfig, list_config_paths, load_config

from .studies import groups_title


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def fmt_acc(acc: float | None) -> str:
    return "-" if acc is None else f"{acc:.2f}"


def head_loss(cfg: ExperimentConfig) -> str:
    text = f"{cfg.model.head}/{cfg.loss.margin if cfg.loss.margin != 'none' else 'ce'}"
    if cfg.loss.label_smoothing:
        text += f" ls{cfg.loss.label_smoothing:g}"
    if cfg.loss.kd:
        text += " +kd"
    return text


def experiment_rows(configs_dir: Path | None = None) -> list[dict]:
    """One row per config file; a config that does not validate shows its error."""
    rows = []
    for path in list_config_paths(configs_dir):
        try:
            cfg = load_config(str(path))
        except ConfigError as exc:
            rows.append({"name": path.stem, "error": str(exc)})
            continue
        size = str(cfg.data.image_size) if not cfg.data.train_sizes else "/".join(map(str, cfg.data.train_sizes))
        rows.append({
            "name": cfg.name, "model": cfg.model.backbone + ("/cifar-stem" if cfg.model.stem == "cifar" else ""),
            "input": size, "pretrained": cfg.model.pretrained, "head_loss": head_loss(cfg),
            "ref_acc": cfg.reference.accuracy, "ref_kind": cfg.reference.kind if cfg.reference.accuracy is not None else None,
            "description": cfg.description, "path": str(path), "error": None,
        })
    return rows


LEADERBOARD_COLUMNS = ("rank", "config", "run_id", "data", "best_acc", "best_epoch", "epochs", "wall", "reference", "ref_kind",
                       "diff", "status")


def leaderboard_rows(runs: list[dict]) -> list[dict]:
    """Ranked rows: CIFAR-100 runs ranked among themselves, synthetic runs separately."""
    out, ranks = [], {}
    for r in runs:
        source = r.get("data_source") or "?"
        ranks[source] = ranks.get(source, 0) + 1
        ref = r.get("reference_acc") if source == "cifar100" else None
        acc = r.get("best_acc")
        out.append({
            "rank": ranks[source], "config": r["config_name"], "run_id": r["run_id"], "data": source,
            "best_acc": acc, "best_epoch": r.get("best_epoch"),
            "epochs": f"{r.get('epochs_done') or 0}/{r.get('epochs_total') or '?'}",
            "wall_s": r.get("wall_s"), "wall": fmt_duration(r.get("wall_s")),
            "reference": ref, "ref_kind": r.get("reference_kind") if ref is not None else None,
            "diff": None if ref is None or acc is None else round(acc - ref, 2),
            "status": r.get("status"),
        })
    return out


def leaderboard_markdown(rows: list[dict]) -> str:
    """In the form of the seed's summary table, plus our measured columns."""
    lines = []
    for source in ("cifar100", "synthetic"):
        group = [r for r in rows if r["data"] == source]
        if not group:
            continue
        if source == "synthetic":
            lines += ["", "Synthetic data (not CIFAR-100; not comparable with the seed):", ""]
        lines += ["| # | Config File | Accuracy | Ref acc | Diff | Best epoch | Epochs | Wall time | Status | Run |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in group:
            diff = "-" if r["diff"] is None else f"{r['diff']:+.2f}"
            seed = fmt_ref(r["reference"], r["ref_kind"])
            lines.append(f"| {r['rank']} | {r['config']}.yaml | {fmt_acc(r['best_acc'])}% | {seed} | {diff} | "
                         f"{r['best_epoch'] or '-'} | {r['epochs']} | {r['wall']} | {r['status']} | {r['run_id']} |")
    return "\n".join(lines).strip() + "\n"


def leaderboard_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    fields = [c if c != "wall" else "wall_s" for c in LEADERBOARD_COLUMNS]
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def leaderboard_json(rows: list[dict]) -> str:
    return json.dumps(rows, indent=None)


REF_KINDS = {"seed": "seed", "paper": "paper", "estimate": "est.", "goal": "goal"}   # how a ref acc is marked


def fmt_ref(acc: float | None, kind: str | None) -> str:
    """A reference accuracy with its kind: `44.26 seed`, `75.61 paper`, `80.00 est.`; a goal as `goal 75.00`."""
    if acc is None:
        return "-"
    if kind == "goal":
        return f"goal {acc:.2f}"
    return f"{acc:.2f} {REF_KINDS.get(kind, 'ref')}"


def fmt_ci(ci, clamped: bool = False, wide: bool = False, signed: bool = False) -> str:
    """`[38.83, 41.37]`; an interval cut at 0 or 100 says `clamped`; one from 2 runs says `wide`."""
    if ci is None:
        return "-"
    f = "{:+.2f}" if signed else "{:.2f}"
    notes = [w for w, on in (("wide", wide), ("clamped", clamped)) if on]
    return f"[{f.format(ci[0])}, {f.format(ci[1])}]" + (f" {', '.join(notes)}" if notes else "")


def fmt_p(p: float | None) -> str:
    if p is None:
        return "-"
    return "p<0.001" if p < 0.001 else f"p={p:.3f}" if p < 0.1 else f"p={p:.2f}"


def vs_cells(g: dict) -> list[str]:
    """A group against the baseline (studies.vs_baseline): difference [95%], p-value (test),
    verdict, seeds per group that would resolve the observed difference at 80% power."""
    vs = g.get("vs")
    if g.get("baseline"):
        return ["baseline", "-", "-", "-"]
    if not vs:
        return ["-", "-", "-", "-"]
    diff = "-" if vs["diff"] is None else f"{vs['diff']:+.2f}"
    if vs["ci"] is not None:
        diff += " " + fmt_ci(vs["ci"], vs["clamped"], signed=True)
    p = fmt_p(vs["p"]) + (f" {vs['test']}" if vs["test"] else "")
    verdict = vs["verdict"] if vs["test"] else f"{vs['verdict']} (n<2)"
    seeds = "-" if vs["verdict"] != "not resolved" else (
        f"~{vs['seeds']}" if vs["seeds"] is not None else (">1000" if vs["diff"] else "?"))
    return [diff, p, verdict, seeds]


GROUP_COLUMNS = ("group", "label", "config", "data", "n", "mean_acc", "std_acc", "ci95_low", "ci95_high", "ci95_clamped",
                 "ci95_wide", "reference", "ref_kind", "ref_in_ci", "diff", "epochs", "wall_s", "runs", "unfinished")
VS_COLUMNS = ("vs_group", "vs_test", "vs_diff", "vs_ci95_low", "vs_ci95_high", "vs_p", "vs_verdict", "vs_seeds")


def groups_text(groups: list[dict], fmt: str, vs: dict | None = None) -> str:
    """`leaderboard --by group` (cifar_tui.studies.group_stats rows) as markdown, csv or json;
    vs: the baseline group (its rows carry `vs`, studies.vs_baseline)."""
    if fmt == "json":
        return json.dumps(groups) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=GROUP_COLUMNS + (VS_COLUMNS if vs else ()), extrasaction="ignore")
        writer.writeheader()
        for g in groups:
            low, high = g["ci95"] or (None, None)
            row = {**g, "ci95_low": low, "ci95_high": high, "runs": " ".join(g["runs"]),
                   "unfinished": " ".join(g["unfinished"])}
            d = g.get("vs") or {}
            if vs:
                row.update(vs_group=vs["group"], vs_test=d.get("test"), vs_diff=d.get("diff"), vs_p=d.get("p"),
                           vs_ci95_low=(d.get("ci") or (None, None))[0], vs_ci95_high=(d.get("ci") or (None, None))[1],
                           vs_verdict=d.get("verdict") if d else ("baseline" if g.get("baseline") else None),
                           vs_seeds=d.get("seeds"))
            writer.writerow(row)
        return buf.getvalue()
    lines = []
    for source in ("cifar100", "synthetic"):
        part = [g for g in groups if g["data"] == source]
        if not part:
            continue
        if source == "synthetic":
            lines += ["", "Synthetic data (not CIFAR-100; not compared with the seed):", ""]
        lines += [f"Every group: {groups_title(part)}", ""]
        head = ["Group", "n", "Mean ± std", "95% interval", "Ref acc", "Inside", "Diff", "Epochs", "Wall time"]
        if vs:
            head += [f"vs {vs['label']}: diff [95%]", "p", "Verdict", "Seeds to resolve"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for g in part:
            cells = group_cells(g) + (vs_cells(g) if vs else [])
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells).replace("\n", " ") + " |")
    return "\n".join(lines).strip() + "\n"


def group_cells(g: dict) -> list[str]:
    """One group as table cells: its name, n, mean ± std, interval, ref acc, inside, diff, epochs, wall."""
    mean = "-" if g["mean_acc"] is None else fmt_acc(g["mean_acc"]) + (f" ± {g['std_acc']:.2f}" if g["std_acc"] is not None else "")
    ci = fmt_ci(g["ci95"], g.get("ci95_clamped", False), g.get("ci95_wide", False))
    if g.get("ref_kind") == "goal" and g["mean_acc"] is not None and g["reference"] is not None:
        inside = "goal met" if g["mean_acc"] >= g["reference"] else "below goal"
    else:
        inside = "-" if g["ref_in_ci"] is None else ("yes" if g["ref_in_ci"] else "no")
    diff = "-" if g["diff"] is None else f"{g['diff']:+.2f}"
    n = str(g["n"]) + (f" (+{len(g['unfinished'])} unfinished)" if g["unfinished"] else "")
    return [g.get("label") or g["group"], n, mean, ci, fmt_ref(g["reference"], g.get("ref_kind")), inside, diff,
            g["epochs"], fmt_duration(g["wall_s"])]
