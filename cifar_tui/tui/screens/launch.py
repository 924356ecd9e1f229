"""The launch form: the common knobs of one or several experiments, validated before anything starts.

With comma lists in the overrides (`optim.lr=1e-3,3e-3`), more than one seed or a study name,
the form plans a study as `cifar-tui run NAME --set ... --seeds N --study S` does (the same
planner, the same one-line refusals) and shows the plan (runs, groups) before queueing it."""
from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Button, Footer, Input, Label, Select, Static

from engine.config import ConfigError, load_config, resolve_config_path

from ...sweep import Plan, default_study_name, is_study, make_plan
from ...auto_seeds import parse_auto
from ...names import name_groups
from ..messages import QueueStudy
from ..support import parse_override_text
from ..widgets.dialog import Dialog
from ..widgets.run_estimate import RunEstimate

PLAN_GROUPS_SHOWN = 6   # groups listed in the form; the rest are counted
FIELD_KEYS = ("train.epochs", "train.batch_size", "optim.lr", "train.device", "data.source")  # the form's fields
SHORT = 34              # a terminal lower than this gets the compact form (fields without borders)
PLAN_DELAY_S = 0.25     # the plan is worked out this long after the last key press
CIFAR100, SYNTHETIC = "cifar100", "synthetic"


@dataclass
class LaunchPlan:
    names: list[str]
    overrides: list[str] = field(default_factory=list)
    nproc: int = 1  # > 1: each run is a DDP run of that many processes, one GPU each
    cfgs: list = field(default_factory=list, compare=False, repr=False)  # the resolved configs, as validated


@dataclass
class StudyForm:
    """What the form asks for when it is a study: the plan, and how it was asked (recorded)."""

    plan: Plan
    sets: list[str]       # the overrides field's items (lists in them)
    extra: list[str]      # the fields' values as overrides
    seeds: int
    nproc: int = 1
    auto: object | None = None   # auto_seeds.AutoSpec: Seeds `auto` (seeds until each group is resolved)

    @property
    def spec(self) -> dict:
        """As the CLI records a sweep."""
        spec = {"names": list(self.plan.names), "sets": list(self.sets), "extra": list(self.extra), "seeds": self.seeds}
        return {**spec, **self.auto.to_dict()} if self.auto is not None else spec

    @property
    def command(self) -> str:
        """The same study from the command line (run again, it continues the study)."""
        args = ["cifar-tui", "run", *self.plan.names]
        for item in [*self.sets, *self.extra]:
            args += ["--set", item]
        if self.auto is not None:
            args += ["--seeds", "auto", "--max-seeds", str(self.auto.max_seeds)]
            args += ["--target-ci", f"{self.auto.target_ci:g}"] if self.auto.target_ci is not None else []
            args += ["--vs", self.auto.vs] if self.auto.vs else []
        elif self.seeds > 1:
            args += ["--seeds", str(self.seeds)]
        if self.nproc > 1:
            args += ["--nproc", str(self.nproc)]
        return shlex.join([*args, "--study", self.plan.study])


def parse_seeds(raw: str) -> int:
    """A number of seeds (0 for `auto`)."""
    raw = raw.strip() or "1"
    if raw.lower() == "auto":
        return 0
    try:
        seeds = int(raw)
    except ValueError:
        raise ConfigError(f"--seeds {raw!r}: expected a whole number of at least 1, or auto") from None
    if seeds < 1:
        raise ConfigError(f"--seeds {seeds}: expected at least 1 (or auto)")
    return seeds


def plan_text(plan: Plan, existing: str = "", auto=None, cost: str = "") -> Text:
    """The plan as the form shows it: the study and its size (or, with seeds auto, its rule), then its groups."""
    text = Text()
    text.append("Plan ", style="bold")
    text.append(f"study {plan.study}: ", style="dim")
    if auto is not None:
        n = len(plan.groups())
        text.append(f"{n} group{'s' if n != 1 else ''}, seeds auto", style="bold cyan")
        text.append(f"\n  {auto.describe()}", style="dim")
    else:
        text.append(plan.describe(), style="bold cyan")
    if existing:
        text.append(f" · {existing}", style="yellow")
    if cost:
        text.append(f"\n  {cost}", style="cyan")
    configs = {r.group: r.config_name for r in plan.runs}
    names = name_groups(configs, configs)  # what every group shares said once; each named by the rest
    if names.title:
        text.append("\n  every group: ", style="dim")
        text.append(names.title)
    groups = list(configs)
    for g in groups[:PLAN_GROUPS_SHOWN]:
        text.append("\n  ")
        text.append(names[g], style="bold yellow" if auto is not None and g == auto.vs else "dim")
        if auto is not None and g == auto.vs:
            text.append("  (baseline)", style="dim")
    if len(groups) > PLAN_GROUPS_SHOWN:
        text.append(f"\n  … and {len(groups) - PLAN_GROUPS_SHOWN} more groups", style="dim")
    return text


class LaunchScreen(ModalScreen[LaunchPlan | None]):
    """The common knobs (epochs, batch size, lr, device, data) + free-form --set overrides, and the
    time the launch will take (widgets/run_estimate.py).

    Data: a retry's own choice, else the last one made in the app (`data`, the App remembers it),
    else the config's; synthetic when CIFAR-100 is not in the data root (and the form says so)."""

    class DataChosen(Message):
        """The form was submitted with this data source (None: each config's own): the next form starts from it."""

        def __init__(self, source: str | None):
            super().__init__()
            self.source = source

    BINDINGS = [
        Binding("escape", "cancel", "Cancel"),
        Binding("ctrl+s", "submit", "Launch"),
    ]

    def __init__(self, names: list[str], configs_dir: Path | None, data_root: Path, gpus: int = 0, *,
                 overrides: list[str] | None = None, note: str | None = None, data: str | None = None):
        super().__init__()
        self.last_data = data                 # the data source chosen last in this workspace (None: none yet)
        self.data_switched = False            # synthetic chosen because CIFAR-100 is not on disk
        self.gpus = gpus
        self.names = names
        self.prefill = list(overrides or [])  # a retry: the refused launch's settings, to change
        self.note = note                      # a retry: why the last launch was refused
        self.launched = False                 # the form was submitted (a launch, or a study posted)
        self._default_study = default_study_name(names)  # fixed while the form is open
        self._plan_timer = None
        self.shown_plan: Plan | None = None  # the study plan the form shows (None: a plain launch)
        self.configs_dir = configs_dir
        self.data_root = Path(data_root)
        self.base = None
        if len(names) == 1:
            try:
                self.base = load_config(names[0], [], configs_dir)
            except ConfigError:
                self.base = None

    def _prefilled(self) -> tuple[dict[str, str], list[str]]:
        """The prefilled overrides: those the fields show (key -> value), and the rest."""
        fields, rest = {}, []
        for item in self.prefill:
            key, _, value = item.partition("=")
            if self.base is not None and key in FIELD_KEYS:
                fields[key] = value
            else:
                rest.append(item)
        return fields, rest

    def compose(self) -> ComposeResult:
        single = self.base is not None
        b = self.base
        fields, rest = self._prefilled()
        title = f"Launch {self.names[0]}" if len(self.names) == 1 else f"Queue {len(self.names)} experiments"
        # each run is pinned to its own GPU(s) with CUDA_VISIBLE_DEVICES: "cuda" is that GPU
        devices = ["auto", "cpu"] + (["cuda"] if self.gpus else [])
        device = fields.get("train.device", b.train.device if single else None)
        if single and device not in devices:
            devices.append(device)
        source = self._initial_source(fields.get("data.source"), b.data.source if single else None)
        with Dialog(id="dialog", classes="launch-dialog"):
            yield Label(title, classes="dialog-title")
            if self.note:
                yield Static(Text(f"The last launch did not start: {self.note}", style="red"), classes="dialog-sub")
            if len(self.names) > 1:
                yield Static(", ".join(self.names), classes="dialog-sub")
                yield Static("Empty fields keep each config's own value.", classes="dialog-sub")
            elif b is not None and b.description:
                yield Static(b.description, classes="dialog-sub")
            with Grid(classes="form-grid"):
                yield Label("Epochs")
                yield Input(fields.get("train.epochs", str(b.train.epochs)) if single else "", placeholder="from config",
                            type="integer", id="f-epochs")
                yield Label("Batch size")
                yield Input(fields.get("train.batch_size", str(b.train.batch_size)) if single else "",
                            placeholder="from config", type="integer", id="f-batch")
                yield Label("Learning rate")
                yield Input(fields.get("optim.lr", f"{b.optim.lr:g}") if single else "", placeholder="from config",
                            type="number", id="f-lr")
                yield Label("Device")
                yield Select([(d, d) for d in devices], value=device if single else Select.NULL,
                             prompt="from config", id="f-device")
                yield Label("Processes")
                yield Input("1", placeholder="1", type="integer", id="f-nproc",
                            tooltip="DDP processes per run: one GPU each (gloo processes on the CPU)")
                yield Label("Data")
                yield Select([("cifar100", CIFAR100), ("synthetic (labelled, ranked apart)", SYNTHETIC)],
                             value=source if source else Select.NULL, prompt="from config", id="f-data")
                yield Label("Overrides")
                yield Input(shlex.join(rest), placeholder="key=value ...  lists sweep: optim.lr=1e-3,3e-3 "
                            "optim.weight_decay=0.05", id="f-set")
                yield Label("Seeds / study")
                with Horizontal(classes="form-pair"):
                    yield Input("1", placeholder="1", id="f-seeds", restrict=r"[0-9aAuUtToO]*",
                                tooltip="Runs per setting, seeds train.seed+0..N-1 (as --seeds N); auto: seeds "
                                "until each group is resolved (as --seeds auto)")
                    yield Input(placeholder=f"study (default {self._study_base()}-<time>)", id="f-study",
                                tooltip="Names the study; an existing sweep study continues (as --study S)")
                yield Label("Until resolved", id="auto-label", classes="-hidden")
                with Horizontal(classes="form-pair -hidden", id="auto-fields"):
                    yield Input(placeholder="max seeds", type="integer", id="f-max-seeds",
                                tooltip="The most runs per group (as --max-seeds N): required with auto")
                    yield Input(placeholder="±pp", type="number", id="f-target-ci",
                                tooltip="Resolved when the group's 95% interval is within ± this many points "
                                "(as --target-ci PP)")
                    yield Input(placeholder="vs group, e.g. lr=1e-3", id="f-vs",
                                tooltip="Resolved when the difference to this group is (p < 0.05) (as --vs GROUP)")
            yield Static("", id="plan", classes="plan")
            yield RunEstimate(id="estimate", classes="estimate")
            yield Static("", id="data-hint", classes="hint")
            yield Static("", id="form-error", classes="form-error")
            with Horizontal(classes="buttons"):
                yield Button("Launch" if len(self.names) == 1 else "Queue all", variant="primary", id="go")
                yield Button("Cancel", id="cancel")
            yield Static("enter / ctrl+s launch · tab next field · esc cancel", classes="dialog-keys")
        yield Footer()

    def on_mount(self) -> None:
        # At once, not with focus()'s deferred call: that could land after the first keys (Textual's
        # auto-focus already gave this field the focus at compose) had moved on to another field.
        self.set_focus(self.query_one("#f-epochs", Input))
        self.query_one(RunEstimate).attach(self._store(), self.gpus)
        self._update_hint()
        self.update_plan()  # the time estimate of the form as it opens

    def _cifar100_here(self) -> bool:
        return (self.data_root / "cifar-100-python").is_dir()

    def _initial_source(self, prefilled: str | None, config_source: str | None) -> str | None:
        """What the Data field starts with (None: each config's own)."""
        source = prefilled or self.last_data or config_source
        if (source or CIFAR100) == CIFAR100 and not self._cifar100_here():
            self.data_switched = True
            return SYNTHETIC
        return source

    def on_resize(self) -> None:
        """A short terminal: fields without borders (one line each), so more of the form is in view."""
        short = self.size.height < SHORT
        self.query_one("#dialog").set_class(short, "-short")
        for widget in self.query("Input, Select, Button"):
            widget.compact = short

    def _study_base(self) -> str:
        return self.names[0].rsplit("/", 1)[-1].removesuffix(".yaml").removesuffix(".yml") \
            if len(self.names) == 1 else "sweep"

    @on(Select.Changed, "#f-data")
    def _update_hint(self) -> None:
        value = self.query_one("#f-data", Select).value
        hint = ""
        if value == CIFAR100 and not self._cifar100_here():
            hint = (f"CIFAR-100 is not in {self.data_root}/cifar-100-python: the run will not start. Get it with "
                    f"`cifar-tui data download` (needs internet), or pick synthetic.")
        elif value == SYNTHETIC and not self._cifar100_here():
            hint = (f"Synthetic data: CIFAR-100 is not in {self.data_root}/cifar-100-python (`cifar-tui data "
                    f"download` gets it, needs internet).")
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

    def set_items(self) -> list[str]:
        return parse_override_text(self.query_one("#f-set", Input).value)

    def validate(self) -> LaunchPlan | StudyForm:
        try:
            sets = self.set_items()
            overrides = self.overrides()
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        extra = overrides[:len(overrides) - len(sets)]
        nproc = self.processes()
        seeds = parse_seeds(self.query_one("#f-seeds", Input).value)
        study = self.query_one("#f-study", Input).value.strip()
        if seeds == 0:  # auto: one run per group planned; the seeds are decided as results come in
            plan = make_plan(self.names, sets, 1, extra=extra, configs_dir=self.configs_dir,
                             study=study or self._default_study)
            self._check_study_kind(plan.study)
            configs = {r.group: r.config_name for r in plan.runs}
            names = name_groups(configs, configs)
            auto = parse_auto(self.query_one("#f-max-seeds", Input).value, self.query_one("#f-target-ci", Input).value,
                              self.query_one("#f-vs", Input).value,
                              [{"group": g, "label": names[g], "config": c} for g, c in configs.items()])
            return StudyForm(plan, sets, extra, 1, nproc, auto=auto)
        if is_study(sets, seeds, study):
            plan = make_plan(self.names, sets, seeds, extra=extra, configs_dir=self.configs_dir,
                             study=study or self._default_study)
            self._check_study_kind(plan.study)
            return StudyForm(plan, sets, extra, seeds, nproc)
        cfgs = [load_config(name, overrides, self.configs_dir) for name in self.names]
        return LaunchPlan(list(self.names), overrides, nproc, cfgs)

    def _store(self):
        return getattr(self.app, "store", None)

    def _check_study_kind(self, name: str) -> None:
        """Refused as `cifar-tui run --study` refuses it: a name taken by a tune or seed study."""
        store = self._store()
        recorded = store.study(name) if store is not None else None
        if recorded is not None and recorded["kind"] != "sweep":
            raise ConfigError(f"--study {name}: already a {recorded['kind']} study; choose another name")

    def _cost(self, form: StudyForm) -> str:
        """The study's time on this machine (studies.plan_cost, never measuring here: the form stays
        responsive); seeds auto: its first seeds."""
        from ...studies import plan_cost

        store, sup = self._store(), getattr(self.app, "sup", None)
        if store is None:
            return ""
        runs = [r.cfg for r in form.plan.runs for _ in range(form.auto.first_seeds if form.auto else 1)]
        line = plan_cost(store, runs, getattr(sup, "max_parallel", 1), gpus=list(getattr(sup, "gpus", []) or []))
        return f"first {form.auto.first_seeds} seeds per group: {line}" if form.auto else line

    def _existing(self, plan: Plan) -> str:
        """What an existing study already has of the plan (a study continues), in words."""
        from ...studies import existing_runs, sort_plan

        store = self._store()
        if store is None or (store.study(plan.study) is None and not store.study_runs(plan.study)):
            return ""
        notes, start, resume = sort_plan(plan, existing_runs(store, plan.study))
        done = len(notes) - len(resume)
        return f"continues the study: {done} done or running, {len(resume)} to resume, {len(start)} to start"

    # ------------------------------------------------------------------ the plan, shown as it is typed
    @on(Input.Changed, "#f-seeds")
    def _seeds_changed(self) -> None:
        auto = self.query_one("#f-seeds", Input).value.strip().lower() == "auto"
        for widget in (self.query_one("#auto-label"), self.query_one("#auto-fields")):
            widget.set_class(not auto, "-hidden")

    @on(Input.Changed)
    @on(Select.Changed)
    def _fields_changed(self) -> None:
        if self._plan_timer is not None:
            self._plan_timer.stop()
        self._plan_timer = self.set_timer(PLAN_DELAY_S, self.update_plan)

    def _looks_like_study(self) -> bool:
        """A list in the overrides, a seed count other than 1, or a study name (valid or not)."""
        try:
            sets = self.set_items()
        except ValueError:
            sets = []
        seeds = self.query_one("#f-seeds", Input).value.strip()
        return is_study(sets, 1, self.query_one("#f-study", Input).value.strip()) or seeds not in ("", "1")

    def update_plan(self) -> None:
        """Work the plan out from the fields and show it (or why there is none)."""
        if not self.is_attached:  # the form was submitted or closed before its timer fired
            return
        shown = self.query_one("#plan", Static)
        go = self.query_one("#go", Button)
        estimate = self.query_one(RunEstimate)
        try:
            form = self.validate()
        except ConfigError as exc:
            self.shown_plan = None
            estimate.clear()
            if self._looks_like_study():  # a plain launch's error waits for the submit, as before
                shown.update(Text(f"Plan: ✖ {self._short_error(str(exc))}", style="red"))
                shown.add_class("-visible")
            else:
                shown.remove_class("-visible")
            return
        self.query_one("#form-error", Static).remove_class("-visible")  # fixed: the last refusal no longer holds
        if isinstance(form, StudyForm):
            estimate.clear()  # a study's time is in its plan (studies.plan_cost: runs at once, seeds auto)
        else:
            estimate.show_for(form.cfgs, form.nproc)
        if isinstance(form, StudyForm):
            self.shown_plan = form.plan
            shown.update(plan_text(form.plan, "" if form.auto else self._existing(form.plan), form.auto,
                                   self._cost(form)))
            shown.add_class("-visible")
            self.call_after_refresh(shown.scroll_visible, animate=False)  # a short terminal scrolls to it
            n = len(form.plan.runs)
            go.label = "Start the study" if form.auto else f"Queue {n} run{'s' if n != 1 else ''}"
        else:
            self.shown_plan = None
            shown.remove_class("-visible")
            go.label = "Launch" if len(self.names) == 1 else "Queue all"

    def action_submit(self) -> None:
        error = self.query_one("#form-error", Static)
        try:
            form = self.validate()
        except ConfigError as exc:
            error.update(Text(f"✖ {self._short_error(str(exc))}"))
            error.add_class("-visible")
            self.query_one(RunEstimate).clear()  # no time for a run the form refuses (its plan timer may not have fired)
            return
        self.launched = True
        if self._plan_timer is not None:  # a plan worked out after the form has gone would find no fields
            self._plan_timer.stop()
        data = self.query_one("#f-data", Select).value
        self.post_message(self.DataChosen(None if data is Select.NULL else str(data)))
        if isinstance(form, StudyForm):
            # the App queues it on the run lifecycle (studies.queue_plan); the form's result is None
            self.app.post_message(QueueStudy(form.plan, form.spec, form.nproc, form.command))
            self.dismiss(None)
            return
        self.dismiss(form)

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
