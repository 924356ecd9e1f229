"""The launch form: the common knobs of one or several experiments, validated before anything starts."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Footer, Input, Label, Select, Static

from engine.config import ConfigError, load_config, resolve_config_path

from ..support import parse_override_text


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
