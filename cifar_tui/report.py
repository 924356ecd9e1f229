"""Plain-data views of experiments and runs, shared by the CLI and the TUI."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from engine.config import ConfigError, ExperimentConfig, list_config_paths, load_config


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
            "reference": cfg.reference.accuracy, "description": cfg.description, "path": str(path), "error": None,
        })
    return rows


LEADERBOARD_COLUMNS = ("rank", "config", "run_id", "data", "best_acc", "best_epoch", "epochs", "wall", "reference", "diff", "status")


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
            "reference": ref, "diff": None if ref is None or acc is None else round(acc - ref, 2),
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
        lines += ["| # | Config File | Accuracy | Seed | Diff | Best epoch | Epochs | Wall time | Status | Run |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in group:
            diff = "-" if r["diff"] is None else f"{r['diff']:+.2f}"
            seed = "-" if r["reference"] is None else f"{r['reference']:.2f}%"
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


GROUP_COLUMNS = ("group", "config", "data", "n", "mean_acc", "std_acc", "ci95_low", "ci95_high", "reference",
                 "ref_in_ci", "diff", "epochs", "wall_s", "runs", "unfinished")


def groups_text(groups: list[dict], fmt: str) -> str:
    """`leaderboard --by group` (cifar_tui.studies.group_stats rows) as markdown, csv or json."""
    if fmt == "json":
        return json.dumps(groups) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=GROUP_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for g in groups:
            low, high = g["ci95"] or (None, None)
            writer.writerow({**g, "ci95_low": low, "ci95_high": high, "runs": " ".join(g["runs"]),
                             "unfinished": " ".join(g["unfinished"])})
        return buf.getvalue()
    lines = []
    for source in ("cifar100", "synthetic"):
        part = [g for g in groups if g["data"] == source]
        if not part:
            continue
        if source == "synthetic":
            lines += ["", "Synthetic data (not CIFAR-100; not compared with the seed):", ""]
        lines += ["| Group | n | Mean ± std | 95% interval | Seed | Seed inside | Diff | Epochs | Wall time |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for g in part:
            lines.append("| " + " | ".join(group_cells(g)).replace("\n", " ") + " |")
    return "\n".join(lines).strip() + "\n"


def group_cells(g: dict) -> list[str]:
    """One group as table cells: group, n, mean ± std, interval, seed, seed inside, diff, epochs, wall."""
    mean = "-" if g["mean_acc"] is None else fmt_acc(g["mean_acc"]) + (f" ± {g['std_acc']:.2f}" if g["std_acc"] is not None else "")
    ci = "-" if g["ci95"] is None else f"[{g['ci95'][0]:.2f}, {g['ci95'][1]:.2f}]"
    inside = "-" if g["ref_in_ci"] is None else ("yes" if g["ref_in_ci"] else "no")
    diff = "-" if g["diff"] is None else f"{g['diff']:+.2f}"
    n = str(g["n"]) + (f" (+{len(g['unfinished'])} unfinished)" if g["unfinished"] else "")
    return [g["group"], n, mean, ci, fmt_acc(g["reference"]), inside, diff, g["epochs"], fmt_duration(g["wall_s"])]
