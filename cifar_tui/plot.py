"""`cifar-tui plot RUN_ID... [--out F.png]`: accuracy and loss curves as an image (matplotlib)."""
from __future__ import annotations

from pathlib import Path

from engine.config import ConfigError
from engine.record.events import read_events, summarize
from engine.record.paths import check_out_file, check_run_id, events_path, resolve_run_id

IMAGE_SUFFIXES = (".png", ".svg", ".pdf", ".jpg", ".jpeg")


def _epochs_for(ws, store, run_id: str) -> tuple[dict, list[dict]]:
    """(run row or summary, epoch rows) from the store, else from runs/<id>/events.jsonl."""
    row = store.run(run_id)
    epochs = store.epochs(run_id) if row else []
    events_file = events_path(Path(ws.home) / run_id)
    if not epochs and events_file.is_file():
        state = summarize(read_events(events_file))
        if row is None and "start" not in state:
            raise ConfigError(f"{events_file}: no readable `start` event (damaged?): nothing to plot for {run_id}")
        start = state.get("start") or {}
        epochs = [state["epochs"][k] for k in sorted(state["epochs"])]
        if row is None:
            row = {"run_id": run_id, "config_name": start.get("config_name", run_id),
                   "data_source": start.get("data_source"), "best_acc": state.get("best_acc")}
    if row is None:
        raise ConfigError(f"run {run_id!r}: not found in {ws.home} (see `cifar-tui runs`)")
    return row, epochs


def default_out(ws, run_ids: list[str]) -> Path:
    """curves.png in the run's directory; several runs: in the first one's, named by the others' ids."""
    run_dir = Path(ws.home) / run_ids[0]
    if len(run_ids) == 1:
        return run_dir / "curves.png"
    others = [rid.rsplit("-", 1)[-1] for rid in run_ids[1:4]] + ([f"{len(run_ids) - 4}-more"] if len(run_ids) > 4 else [])
    return run_dir / f"curves-vs-{'-'.join(others)}.png"


def plot_runs(ws, run_ids: list[str], out: Path | None = None) -> Path:
    """Write test/train accuracy and loss per epoch of the given runs to `out` (default:
    `default_out`); return the path written."""
    if not run_ids:
        raise ConfigError("plot: give at least one run id")
    for rid in run_ids:
        check_run_id(rid)
    if out is not None:
        out = check_out_file(out, IMAGE_SUFFIXES, "image file")
    store = ws.store()
    try:
        known = store.run_ids()
        run_ids = [resolve_run_id(ws.home, rid, known) for rid in run_ids]  # unique prefixes too
        series = [(rid, *_epochs_for(ws, store, rid)) for rid in run_ids]
    finally:
        store.close()
    if out is None:
        out = check_out_file(default_out(ws, run_ids), IMAGE_SUFFIXES, "image file")
    if not any(epochs for _, _, epochs in series):
        raise ConfigError(f"plot: no finished epoch yet in {', '.join(run_ids)}")

    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    shown = [(rid, row, epochs) for rid, row, epochs in series if epochs]
    ncol = 1 if len(shown) > 2 else 2
    legend_rows = -(-(len(shown) + 2) // ncol)
    legend_h = 0.2 * legend_rows + 0.15  # inches
    fig_h = 4.2 + legend_h
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(12, fig_h), dpi=110)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    handles = []
    for i, (rid, row, epochs) in enumerate(shown):
        color = colors[i % len(colors)]
        label = rid + (" (synthetic data)" if row.get("data_source") == "synthetic" else "")
        if row.get("best_acc") is not None:
            label += f"  best {row['best_acc']:.2f}%"
        xs = [e["epoch"] for e in epochs]
        marker = "o" if len(xs) < 30 else None

        def pts(key: str) -> tuple[list, list]:
            pairs = [(x, e.get(key)) for x, e in zip(xs, epochs) if e.get(key) is not None]
            return [p[0] for p in pairs], [p[1] for p in pairs]

        ax_acc.plot(*pts("test_acc"), color=color, marker=marker, ms=3)
        ax_acc.plot(*pts("train_acc"), color=color, ls="--", alpha=0.6)
        ax_loss.plot(*pts("test_loss"), color=color, marker=marker, ms=3)
        ax_loss.plot(*pts("train_loss"), color=color, ls="--", alpha=0.6)
        handles.append(Line2D([], [], color=color, label=label))
    handles += [Line2D([], [], color="gray", label="test (solid)"),
                Line2D([], [], color="gray", ls="--", alpha=0.6, label="train (dashed)")]
    ax_acc.set(title="Accuracy", xlabel="epoch", ylabel="accuracy %")
    ax_loss.set(title="Loss", xlabel="epoch", ylabel="loss")
    for ax in (ax_acc, ax_loss):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.legend(handles=handles, loc="lower center", ncol=ncol, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, legend_h / fig_h, 1, 1))
    try:
        fig.savefig(out)
    except OSError as exc:
        raise ConfigError(f"--out {out}: cannot write: {exc.strerror or exc}") from None
    finally:
        plt.close(fig)
    return out
