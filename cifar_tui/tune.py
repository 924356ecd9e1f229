"""`cifar-tui tune`: an Optuna study (TPE) over a config's settings, its trials ordinary runs.

- The study lives in the workspace: Optuna's JournalStorage in runs/optuna.journal, safe on NFS
  (cifar_tui/tune_storage.py; SLURM workers share it: cifar_tui/tune_workers.py), next to
  cifar_tui.db; our `studies` table keeps what was asked (config, params, trials, pruner).
- Each trial is a run queued on the supervisor (GPU leases; one at a time on the CPU), recorded
  with `start.study` = the study and its own group (the config, its settings and `trial=N`, so
  it is named `#N lr=...`); its run id is the trial's user attribute `run_id`.
- Pruning: each epoch's test accuracy is reported to the trial (step = epoch); when the pruner
  says so the run is stopped as pruned (Supervisor.prune: a request in its run dir + SIGTERM),
  and its `end` event and store row say `pruned`; the trial is told PRUNED.
- Resumable: rerun with the same `--study` after a kill, a crash or Ctrl-C. Trials left RUNNING
  are taken up again: a run still alive is followed (its missing epochs reported), a stopped or
  crashed one is resumed from its checkpoint, a finished one is told its result; then new
  trials until the study has --trials finished (complete or pruned) trials.
"""
from __future__ import annotations

import math
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from engine.config import ConfigError, load_config
from engine.record.events import EventTail, latest_event
from engine.record.paths import events_path
from engine.record.status import COMPLETED, LIVE, PRUNED, QUEUED, RESUMABLE, STARTING, STOPPED

from .names import TRIAL_KEY, short_settings
from .supervisor import Refused, Started, Supervisor
from .tune_storage import LEGACY_STORAGE_FILE, STORAGE_FILE, file_lock, storage_path  # noqa: F401 - re-exported
# (tests and the TUI import _storage from here)
from .tune_storage import open_storage as _storage
from .sweep import canonical, group_key
from .workspace import Workspace

MAX_FAILURES_IN_A_ROW = 3
PRUNERS = ("none", "median", "percentile:P", "threshold:MIN")


# ---------------------------------------------------------------- the search space


@dataclass(frozen=True)
class Param:
    key: str
    kind: str                       # log | float | int | choice
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()
    text: str = ""

    def distribution(self):
        import optuna.distributions as d

        if self.kind == "choice":
            return d.CategoricalDistribution(list(self.choices))
        if self.kind == "int":
            return d.IntDistribution(int(self.low), int(self.high))
        return d.FloatDistribution(self.low, self.high, log=self.kind == "log")

    def override(self, value: Any) -> str:
        return f"{self.key}={value if isinstance(value, str) else canonical(value)}"

    def ends(self) -> list[str]:
        """Overrides at the edges of the range (each choice): checked before anything runs."""
        if self.kind == "choice":
            return [f"{self.key}={c}" for c in self.choices]
        values = [int(self.low), int(self.high)] if self.kind == "int" else [self.low, self.high]
        return [self.override(v) for v in values]


def parse_param(text: str) -> Param:
    """KEY=log:LOW:HIGH | float:LOW:HIGH | int:LOW:HIGH | choice:A,B,... (ConfigError: one line)."""
    key, eq, spec = text.partition("=")
    key = key.strip()
    expected = "expected KEY=log:LOW:HIGH, float:LOW:HIGH, int:LOW:HIGH or choice:A,B (e.g. optim.lr=log:1e-4:1e-1)"
    if not eq or not key or not all(p.isidentifier() for p in key.split(".")):
        raise ConfigError(f"--param {text!r}: {expected}")
    kind, _, rest = spec.partition(":")
    if kind == "choice":
        choices = tuple(c.strip() for c in rest.split(","))
        if len(choices) < 2 or any(not c for c in choices) or len(set(choices)) != len(choices):
            raise ConfigError(f"--param {text!r}: choice needs two or more different values, e.g. choice:adamw,sgd")
        return Param(key, kind, choices=choices, text=text)
    if kind not in ("log", "float", "int"):
        raise ConfigError(f"--param {text!r}: {expected}")
    bounds = rest.split(":")
    try:
        low, high = (float(b) for b in bounds) if len(bounds) == 2 else (None, None)
    except ValueError:
        low = high = None
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        raise ConfigError(f"--param {text!r}: {expected}")
    if not low < high:
        raise ConfigError(f"--param {text!r}: LOW must be below HIGH")
    if kind == "log" and low <= 0:
        raise ConfigError(f"--param {text!r}: a log range needs LOW > 0")
    if kind == "int" and not (low.is_integer() and high.is_integer()):
        raise ConfigError(f"--param {text!r}: an int range needs whole numbers")
    return Param(key, kind, low, high, text=text)


def make_pruner(spec: str, *, warmup: int = 0, startup: int = 5):
    """none | median | percentile:P | threshold:MIN (test accuracy below MIN is pruned).

    warmup: the first `warmup` epochs are never pruned (steps are epochs, counted from 1);
    startup: trials that must finish before the median / percentile pruner prunes."""
    import optuna.pruners as p

    name, _, arg = spec.partition(":")
    warmup += 1  # Optuna prunes from step n_warmup_steps on; our first step is epoch 1
    try:
        if name == "none" and not arg:
            return p.NopPruner()
        if name == "median" and not arg:
            return p.MedianPruner(n_startup_trials=startup, n_warmup_steps=warmup)
        if name == "percentile":
            return p.PercentilePruner(float(arg), n_startup_trials=startup, n_warmup_steps=warmup)
        if name == "threshold":
            return p.ThresholdPruner(lower=float(arg), n_warmup_steps=warmup)
    except ValueError as exc:
        raise ConfigError(f"--prune {spec}: {exc}") from None
    raise ConfigError(f"--prune {spec!r}: expected one of {', '.join(PRUNERS)}")


@dataclass
class TuneSpec:
    config: str
    params: list[Param]
    trials: int
    study: str
    prune: str = "none"
    prune_warmup: int = 0
    prune_startup: int = 5
    overrides: list[str] = field(default_factory=list)
    sampler_seed: int | None = None
    nproc: int = 1

    def check(self, ws: Workspace) -> str:
        """Every edge of the search space validates against the config (ConfigError otherwise);
        returns the config's name."""
        if not self.params:
            raise ConfigError("tune: give at least one --param KEY=log:LOW:HIGH (or float:, int:, choice:)")
        keys = [p.key for p in self.params]
        for k in keys:
            if keys.count(k) > 1:
                raise ConfigError(f"--param {k}: given twice")
            if any(o.partition("=")[0].strip() == k for o in self.overrides):
                raise ConfigError(f"--param {k}: searched and also set with --set; keep one of them")
        cfg = load_config(self.config, self.overrides, ws.configs)
        for p in self.params:
            for end in p.ends():
                load_config(self.config, [*self.overrides, end], ws.configs)
        make_pruner(self.prune, warmup=self.prune_warmup, startup=self.prune_startup)
        return cfg.name

    def to_dict(self) -> dict:
        return {"config": self.config, "params": [p.text for p in self.params], "trials": self.trials,
                "prune": self.prune, "prune_warmup": self.prune_warmup, "prune_startup": self.prune_startup,
                "overrides": self.overrides, "sampler_seed": self.sampler_seed, "nproc": self.nproc}


# ---------------------------------------------------------------- the loop


@dataclass
class Watched:
    trial: Any                     # optuna.Trial
    run_id: str | None = None
    item_id: int | None = None
    tail: EventTail | None = None
    end: dict | None = None
    pruning: bool = False
    reported: set[int] = field(default_factory=set)   # epochs already reported to the trial


class Tuner:
    """Runs a TuneSpec on a supervisor. `say(line)` prints progress; run() returns an exit code
    (0 done, 2 bad input, 130 interrupted: the study continues with the same command)."""

    def __init__(self, ws: Workspace, sup: Supervisor, spec: TuneSpec, say: Callable[[str], None]):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.ws, self.sup, self.spec, self.say = ws, sup, spec, say
        self.config_name = spec.check(ws)
        self.storage = _storage(ws)
        existing = {s.study_name for s in optuna.get_all_study_summaries(self.storage, include_best_trial=False)}
        seed = spec.sampler_seed
        if seed is not None and spec.study in existing:  # a continued study must not replay the same samples
            seed += len(optuna.load_study(study_name=spec.study, storage=self.storage).trials)
        self.study = optuna.create_study(
            study_name=spec.study, storage=self.storage, direction="maximize", load_if_exists=True,
            sampler=optuna.samplers.TPESampler(seed=seed),
            pruner=make_pruner(spec.prune, warmup=spec.prune_warmup, startup=spec.prune_startup))
        self.continued = spec.study in existing
        self.parallel = sup.max_parallel            # trials at a time
        self.distributions = {p.key: p.distribution() for p in spec.params}
        self.watched: dict[int, Watched] = {}      # by trial number
        self.interrupted = False
        self.failures_in_a_row = 0
        self.code = 0

    # -- counting
    def _finished(self) -> int:
        from optuna.trial import TrialState

        return len(self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))

    def _take_work(self) -> bool:
        """Start one more trial if the study needs it; False when it does not."""
        if self._finished() + len(self.watched) >= self.spec.trials:
            return False
        self._start_trial()
        return True

    def _search_done(self) -> bool:
        """Nothing followed here: may the loop end?"""
        return self._finished() >= self.spec.trials

    def _tell(self, trial, value: float | None = None, state=None) -> None:
        """Tell a trial its outcome, unless it was told already (by another worker, or a search
        that adopted it)."""
        from optuna.trial import TrialState

        frozen = self.storage.get_trial(trial._trial_id)
        if frozen.state.is_finished():
            return
        if value is None:
            self.study.tell(trial, state=state or TrialState.FAIL)
        else:
            self.study.tell(trial, value)

    # -- trials
    def _start_trial(self) -> None:
        trial = self.study.ask(self.distributions)
        overrides = [*self.spec.overrides, *(p.override(trial.params[p.key]) for p in self.spec.params)]
        group = f"{group_key(self.config_name, overrides)} {TRIAL_KEY}={trial.number}"  # named `#N lr=...` (names)
        item = self.sup.enqueue(self.spec.config, overrides, self.spec.nproc, study=self.spec.study, group=group)
        self.watched[trial.number] = Watched(trial, item_id=item)
        self.say(f"trial {trial.number}: {short_settings({p.key: trial.params[p.key] for p in self.spec.params})}")

    def _recover(self) -> None:
        """Trials a previous tune left RUNNING: follow, resume or settle them."""
        import optuna
        from optuna.trial import TrialState

        for frozen in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            self._adopt(frozen)

    def _adopt(self, frozen) -> bool:
        """Take up a trial left RUNNING: follow its run, resume it, or settle it (a trial its pruner
        condemns is told pruned). False when it was told failed instead (its run never started or
        cannot be resumed)."""
        import optuna
        from optuna.trial import TrialState

        trial = optuna.trial.Trial(self.study, frozen._trial_id)
        run_id = frozen.user_attrs.get("run_id")
        if not run_id:
            self._tell(trial, state=TrialState.FAIL)
            self.say(f"trial {frozen.number}: its run never started (failed)")
            return False
        status = self.sup.status(run_id)
        w = Watched(trial, run_id=run_id, tail=EventTail(events_path(Path(self.ws.home) / run_id)),
                    reported=set(frozen.intermediate_values))
        if status in RESUMABLE and frozen.intermediate_values and trial.should_prune():
            self._tell(trial, state=TrialState.PRUNED)  # its search was stopping it when it was left
            self.say(f"trial {frozen.number} pruned (run {run_id}, {status} while being pruned)")
            return True
        if status in RESUMABLE:
            try:
                w.item_id = self.sup.resume(run_id)
            except ConfigError as exc:
                self._tell(trial, state=TrialState.FAIL)
                self.say(f"trial {frozen.number}: run {run_id} cannot be resumed ({exc}); failed")
                return False
            self.say(f"trial {frozen.number}: resuming run {run_id} ({status})")
        elif status in LIVE or status == QUEUED:
            self.say(f"trial {frozen.number}: following run {run_id}, still {status}")
        else:
            self.say(f"trial {frozen.number}: run {run_id} is {status}")
        self.watched[frozen.number] = w
        return True

    def _follow(self, w: Watched) -> None:
        """Report new epochs; prune when the pruner says so."""
        if w.tail is None:
            return
        for e in w.tail.poll():
            if e.get("type") == "end":
                w.end = e
            if e.get("type") != "epoch" or e.get("test_acc") is None:
                continue
            step = int(e["epoch"])
            if step in w.reported:
                continue
            w.trial.report(float(e["test_acc"]), step)
            w.reported.add(step)
            if not w.pruning and e.get("epoch") < (e.get("epochs") or math.inf) and w.trial.should_prune():
                w.pruning = True
                reason = f"pruned by Optuna ({self.spec.prune}) at epoch {step}: test acc {e['test_acc']:.2f}"
                try:
                    self.sup.prune(w.run_id, reason)
                    self.say(f"trial {w.trial.number}: {reason}")
                except ConfigError:
                    pass  # it ended just now: its end event decides

    def _settle(self, w: Watched) -> bool:
        """Tell the trial its outcome once its run has ended; True when settled."""
        from optuna.trial import TrialState

        if w.run_id in self.sup.children:
            return False  # reaped in the loop
        status = self.sup.status(w.run_id)
        if status in LIVE or status in (QUEUED, STARTING):
            return False
        self._follow(w)  # what it wrote last
        end = w.end or latest_event(Path(self.ws.home) / w.run_id, "end")
        n = w.trial.number
        if status == COMPLETED and end is not None and end.get("best_acc") is not None:
            self._tell(w.trial, float(end["best_acc"]))
            self.failures_in_a_row = 0
            self.say(f"trial {n} completed: best test acc {end['best_acc']:.2f} (run {w.run_id})")
        elif status == PRUNED:
            self._tell(w.trial, state=TrialState.PRUNED)
            self.failures_in_a_row = 0
            self.say(f"trial {n} pruned (run {w.run_id})")
        elif status == STOPPED and self.interrupted:
            self.say(f"trial {n}: run {w.run_id} stopped; the next `cifar-tui tune ... --study "
                     f"{self.spec.study}` resumes it")
        else:
            self._tell(w.trial, state=TrialState.FAIL)
            self.failures_in_a_row += 1
            why = (end or {}).get("error") or status
            self.say(f"trial {n} failed: {why} (run {w.run_id})")
        return True

    def _on_pump(self, outcomes: list) -> None:
        from optuna.trial import TrialState

        by_item = {w.item_id: w for w in self.watched.values() if w.item_id is not None}
        for outcome in outcomes:
            w = by_item.get(outcome.item_id)
            if w is None:
                continue
            if isinstance(outcome, Started):
                w.run_id = outcome.run_id
                w.trial.set_user_attr("run_id", outcome.run_id)
                if w.tail is None:
                    w.tail = EventTail(outcome.launched.events_path)
                self.say(f"trial {w.trial.number}: run {outcome.run_id} on {outcome.label}")
            elif isinstance(outcome, Refused):
                self._tell(w.trial, state=TrialState.FAIL)
                self.watched.pop(w.trial.number)
                self.failures_in_a_row += 1
                self.say(f"trial {w.trial.number} refused: {outcome.reason}")

    def _drop_unstarted(self) -> None:
        """Trials whose run had not started when the search was interrupted: failed (nothing ran)."""
        from optuna.trial import TrialState

        for number, w in list(self.watched.items()):
            if w.run_id is None:
                self._tell(w.trial, state=TrialState.FAIL)
                del self.watched[number]

    def _interrupt(self, signum, frame) -> None:  # noqa: ARG002
        self.interrupted = True
        self.sup.interrupt(signal.SIGINT)

    def run(self) -> int:
        previous = signal.signal(signal.SIGINT, self._interrupt)
        try:
            if self.continued:
                self._recover()
            while True:
                for reaped in self.sup.reap():
                    w = next((w for w in self.watched.values() if w.run_id == reaped.run_id), None)
                    if w is not None and reaped.refusal and reaped.code == 2:
                        self.say(f"trial {w.trial.number}: {reaped.refusal}")
                for number, w in list(self.watched.items()):
                    self._follow(w)
                    if w.run_id and self._settle(w):
                        del self.watched[number]
                if self.interrupted:
                    self.sup.cancel_own()
                    self._drop_unstarted()
                elif self.failures_in_a_row >= MAX_FAILURES_IN_A_ROW:
                    self.say(f"{self.failures_in_a_row} trials failed in a row: stopping the search")
                    self.code = 1
                    self.sup.cancel_own()
                    self._drop_unstarted()
                else:
                    while len(self.watched) < self.parallel and self._take_work():
                        pass
                    self._on_pump(self.sup.pump())
                if not self.watched and (self.interrupted or self.code or self._search_done()):
                    break
                time.sleep(0.2)
        finally:
            signal.signal(signal.SIGINT, previous)
        return 130 if self.interrupted else self.code


# ---------------------------------------------------------------- results


def best_trial(ws: Workspace, study: str) -> dict | None:
    """The best completed trial of the Optuna study `study` in the workspace, or None (no such
    study, or none completed): {"study", "number", "value", "params", "run_id", "states"}."""
    if not any((Path(ws.home) / name).is_file() for name in (STORAGE_FILE, LEGACY_STORAGE_FILE)):
        return None
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        s = optuna.load_study(study_name=study, storage=_storage(ws))
    except KeyError:
        return None
    states: dict[str, int] = {}
    for t in s.get_trials(deepcopy=False):
        states[t.state.name.lower()] = states.get(t.state.name.lower(), 0) + 1
    try:
        best = s.best_trial
    except ValueError:
        return {"study": study, "number": None, "value": None, "params": {}, "run_id": None, "states": states}
    return {"study": study, "number": best.number, "value": best.value, "params": dict(best.params),
            "run_id": best.user_attrs.get("run_id"), "states": states}
