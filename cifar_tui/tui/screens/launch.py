"""Modal screens of the Textual app: launch form, confirmations, quit, run comparison."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, DataTable, Footer, Input, Label, Select, Static

from engine.config import ConfigError, load_config, resolve_config_path

from ...report import fmt_acc
from ..support import config_diff, fmt_value, parse_override_text, short_run


@dataclass
class LaunchPlan:
    names: list[str]
    overrides: list[str] = field(default_factory=list)
    nproc: int = 1  # > 1: each run is a DDP run of that many processes, one GPU each


class LaunchScreen(ModalScreen[LaunchPlan | None]):
    """The common knobs (epochs, batch size, lr, device, data) + free-form --set overrides."""

    BINDINGS = [
        Binding("escape", "cancel", "Cancel"),
        Binding("ctrl+s", "submit", "Launch"),
    ]

    def __init__(self, names: list[str], configs_dir: Path | None, data_root: Path, gpus: int = 0):
        super().__init__()
        self.gpus = gpus
        self.names = names
        self.configs_dir = configs_dir
        self.data_root = Path(data_root)
        self.base = None
        if len(names) == 1:
            try:
                self.base = load_config(names[0], [], configs_dir)
            except ConfigError:
                self.base = None

    def compose(self) -> ComposeResult:
        single = self.base is not None
        b = self.base
        title = f"Launch {self.names[0]}" if len(self.names) == 1 else f"Queue {len(self.names)} experiments"
        # each run is pinned to its own GPU(s) with CUDA_VISIBLE_DEVICES: "cuda" is that GPU
        devices = ["auto", "cpu"] + (["cuda"] if self.gpus else [])
        if single and b.train.device not in devices:
            devices.append(b.train.device)
        with Vertical(id="dialog", classes="launch-dialog"):
            yield Label(title, classes="dialog-title")
            if len(self.names) > 1:
                yield Static(", ".join(self.names), classes="dialog-sub")
                yield Static("Empty fields keep each config's own value.", classes="dialog-sub")
            elif b is not None and b.description:
                yield Static(b.description, classes="dialog-sub")
            with Grid(classes="form-grid"):
                yield Label("Epochs")
                yield Input(str(b.train.epochs) if single else "", placeholder="from config", type="integer", id="f-epochs")
                yield Label("Batch size")
                yield Input(str(b.train.batch_size) if single else "", placeholder="from config", type="integer",
                            id="f-batch")
                yield Label("Learning rate")
                yield Input(f"{b.optim.lr:g}" if single else "", placeholder="from config", type="number", id="f-lr")
                yield Label("Device")
                yield Select([(d, d) for d in devices], value=b.train.device if single else Select.NULL,
                             prompt="from config", id="f-device")
                yield Label("Processes")
                yield Input("1", placeholder="1", type="integer", id="f-nproc",
                            tooltip="DDP processes per run: one GPU each (gloo processes on the CPU)")
                yield Label("Data")
                yield Select([("cifar100", "cifar100"), ("synthetic (labelled, ranked apart)", "synthetic")],
                             value=b.data.source if single else Select.NULL, prompt="from config", id="f-data")
                yield Label("Overrides")
                yield Input(placeholder="key=value ...  e.g. data.train_limit=5000 optim.weight_decay=0.05",
                            id="f-set")
            yield Static("", id="data-hint", classes="hint")
            yield Static("", id="form-error", classes="form-error")
            with Horizontal(classes="buttons"):
                yield Button("Launch" if len(self.names) == 1 else "Queue all", variant="primary", id="go")
                yield Button("Cancel", id="cancel")
            yield Static("enter / ctrl+s launch · tab next field · esc cancel", classes="dialog-keys")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#f-epochs", Input).focus()
        self._update_hint()

    @on(Select.Changed, "#f-data")
    def _update_hint(self) -> None:
        value = self.query_one("#f-data", Select).value
        hint = ""
        if value == "cifar100" and not (self.data_root / "cifar-100-python").is_dir():
            hint = (f"CIFAR-100 is not in {self.data_root}/cifar-100-python: the run downloads it first "
                    f"(needs internet), or pick synthetic.")
        self.query_one("#data-hint", Static).update(hint)

    def overrides(self) -> list[str]:
        """The form as --set items (only what differs from the config, for one experiment)."""
        b = self.base
        out: list[str] = []

        def field_value(input_id: str) -> str:
            return self.query_one(input_id, Input).value.strip()

        for input_id, key, current in (("#f-epochs", "train.epochs", b.train.epochs if b else None),
                                       ("#f-batch", "train.batch_size", b.train.batch_size if b else None),
                                       ("#f-lr", "optim.lr", b.optim.lr if b else None)):
            raw = field_value(input_id)
            if not raw:
                continue
            try:
                same = current is not None and float(raw) == float(current)
            except ValueError:
                same = False
            if not same:
                out.append(f"{key}={raw}")
        for select_id, key, current in (("#f-device", "train.device", b.train.device if b else None),
                                        ("#f-data", "data.source", b.data.source if b else None)):
            value = self.query_one(select_id, Select).value
            if value is not Select.NULL and value != current:
                out.append(f"{key}={value}")
        out += parse_override_text(self.query_one("#f-set", Input).value)
        return out

    def processes(self) -> int:
        raw = self.query_one("#f-nproc", Input).value.strip() or "1"
        try:
            nproc = int(raw)
        except ValueError:
            raise ConfigError(f"processes: expected a whole number of at least 1, got {raw!r}") from None
        if nproc < 1:
            raise ConfigError(f"processes: expected a whole number of at least 1, got {nproc}")
        if self.gpus and nproc > self.gpus:
            raise ConfigError(f"processes: a run of {nproc} processes needs {nproc} GPUs, {self.gpus} are visible")
        return nproc

    def validate(self) -> LaunchPlan:
        try:
            overrides = self.overrides()
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        nproc = self.processes()
        for name in self.names:
            load_config(name, overrides, self.configs_dir)
        return LaunchPlan(list(self.names), overrides, nproc)

    def action_submit(self) -> None:
        error = self.query_one("#form-error", Static)
        try:
            plan = self.validate()
        except ConfigError as exc:
            error.update(Text(f"✖ {self._short_error(str(exc))}"))
            error.add_class("-visible")
            return
        self.dismiss(plan)

    def _short_error(self, message: str) -> str:
        # "/abs/path/configs/x.yaml (with --set): key: problem" -> "x (with --set): key: problem"
        for name in self.names:
            try:
                path = str(resolve_config_path(name, self.configs_dir))
            except ConfigError:
                continue
            message = message.replace(path, name)
        return message

    def action_cancel(self) -> None:
        self.dismiss(None)

    @on(Input.Submitted)
    def _submitted(self) -> None:
        self.action_submit()

    @on(Button.Pressed, "#go")
    def _go(self) -> None:
        self.action_submit()

    @on(Button.Pressed, "#cancel")
    def _cancel(self) -> None:
        self.dismiss(None)


class ConfirmScreen(ModalScreen[bool]):
    BINDINGS = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(self, title: str, message: str, yes: str = "Delete"):
        super().__init__()
        self.title_text, self.message, self.yes = title, message, yes

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="confirm-dialog"):
            yield Label(self.title_text, classes="dialog-title")
            yield Static(self.message, classes="dialog-body")
            with Horizontal(classes="buttons"):
                yield Button(f"{self.yes} (y)", variant="error", id="yes")
                yield Button("Cancel (n)", id="no")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def action_answer(self, value: bool) -> None:
        self.dismiss(value)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")


class QuitScreen(ModalScreen[str | None]):
    """Runs are still going: leave them running, stop them, or stay."""

    BINDINGS = [
        Binding("l", "answer('leave')", "Leave running"),
        Binding("s", "answer('stop')", "Stop them"),
        Binding("escape,c", "answer(None)", "Cancel"),
    ]

    def __init__(self, live: list[str], queued: int):
        super().__init__()
        self.live, self.queued = live, queued

    def compose(self) -> ComposeResult:
        n = len(self.live)
        with Vertical(id="dialog", classes="quit-dialog"):
            yield Label(f"{n} run{'s are' if n != 1 else ' is'} still training", classes="dialog-title")
            yield Static("\n".join(f"  ▶ {r}" for r in self.live[:8]) + (f"\n  … and {n - 8} more" if n > 8 else ""),
                         classes="dialog-body")
            note = ("Runs are separate processes: left running, they keep training and this app re-attaches "
                    "when you open it again. Stopping writes a checkpoint; resume later with r.")
            if self.queued:
                note += f" {self.queued} queued run{'s' if self.queued != 1 else ''} will start when the app is open again."
            yield Static(note, classes="dialog-sub")
            with Horizontal(classes="buttons"):
                yield Button("Leave running (l)", variant="primary", id="leave")
                yield Button("Stop them (s)", variant="warning", id="stop")
                yield Button("Cancel (esc)", id="cancel")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#leave", Button).focus()

    def action_answer(self, value: str | None) -> None:
        self.dismiss(value)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(None if event.button.id == "cancel" else event.button.id)


class CompareScreen(Screen):
    """Accuracy curves of several runs overlaid, and the config keys that differ."""

    BINDINGS = [Binding("escape,q", "app.pop_screen", "Back")]

    def __init__(self, runs: list[dict], epochs: dict[str, list[dict]]):
        super().__init__()
        self.runs = runs
        self.epochs = epochs

    def compose(self) -> ComposeResult:
        from textual_plotext import PlotextPlot

        with Vertical(classes="compare"):
            yield Static(Text(f"Comparing {len(self.runs)} runs", style="bold"), classes="compare-title")
            summary = DataTable(id="compare-summary", cursor_type="none", zebra_stripes=True)
            summary.border_title = "Runs"
            yield summary
            plot = PlotextPlot(id="compare-plot")
            plot.border_title = "Test accuracy % per epoch"
            yield plot
            diff = DataTable(id="compare-diff", cursor_type="row", zebra_stripes=True)
            diff.border_title = "Config keys that differ"
            yield diff
        yield Footer()

    def on_mount(self) -> None:
        from textual_plotext import PlotextPlot

        colors = ["cyan", "orange", "green", "magenta", "red", "blue", "yellow", "white"]
        summary = self.query_one("#compare-summary", DataTable)
        summary.add_columns("", "run", "config", "data", "best acc", "best ep", "epochs", "status")
        for i, r in enumerate(self.runs):
            syn = r.get("data_source") == "synthetic"
            summary.add_row(Text("━━", style=colors[i % len(colors)]), r["run_id"], r["config_name"],
                            Text(r.get("data_source") or "?", style="magenta" if syn else "cyan"),
                            fmt_acc(r.get("best_acc")), str(r.get("best_epoch") or "-"),
                            f"{r.get('epochs_done') or 0}/{r.get('epochs_total') or '?'}", r.get("status") or "-")
        plot = self.query_one("#compare-plot", PlotextPlot)
        plt = plot.plt
        plt.clear_figure()
        for i, r in enumerate(self.runs):
            eps = [e for e in self.epochs.get(r["run_id"], []) if e.get("test_acc") is not None]
            if eps:
                plt.plot([e["epoch"] for e in eps], [e["test_acc"] for e in eps], marker="braille" if len(eps) > 1 else "hd",
                         color=colors[i % len(colors)], label=short_run(r["run_id"]))
        plt.xlabel("epoch")
        plot.refresh()
        diff = self.query_one("#compare-diff", DataTable)
        configs = []
        for r in self.runs:
            try:
                configs.append(json.loads(r.get("config_json") or "{}"))
            except json.JSONDecodeError:
                configs.append({})
        rows = config_diff(configs)
        diff.add_column("key", key="key")
        for i, r in enumerate(self.runs):
            diff.add_column(Text(short_run(r["run_id"]), style=colors[i % len(colors)]), key=f"r{i}")
        if not rows:
            diff.add_row("(the configs are identical)", *[""] * len(self.runs))
        for key, values in rows:
            diff.add_row(Text(key, style="bold"), *[fmt_value(v) for v in values], key=key)
        self.diff_rows = rows
