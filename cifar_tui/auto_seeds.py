"""`--seeds auto`: a study adds seeds to its groups until each one is resolved or capped.

A group is resolved when its 95% interval is no wider than ±`target_ci` points and/or (with
`vs`) its difference to the baseline group is resolved (p < 0.05: better or worse); it is capped
at `max_seeds` runs. Each group first gets `first_seeds` (3, or max_seeds if lower); then the
groups furthest from resolved (the most seeds still needed, from the observed spread: stats)
get the next runs first. The baseline keeps up with the group that needs the most. Every group
uses the same seeds (the config's seed + 0, 1, 2, ...), so two groups that ran the same seeds
are compared pair by pair.

What runs next is a pure function of the store's state: `study_state(store, plan, starting)`
reads the study's runs and queue items into `GroupState`s, and `decide(spec, groups, slots)`
returns the runs to start and to resume. Nothing else is remembered, so a driver that is
interrupted, crashes or runs again with the same --study continues where the store says the
study is; any number of drivers (this CLI, a TUI, SLURM workers) reach the same decision.
A stopped or crashed run is resumed; a failed or pruned one counts against the cap.

Looking at the p-value after every run and stopping once it is below 0.05 makes "resolved"
somewhat more likely by chance than 5% (no correction for these repeated looks is applied).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

from engine.config import ConfigError
from engine.record.status import COMPLETED, CRASHED, FAILED, ITEM_QUEUED, LIVE, PRUNED, QUEUED, STOPPED

from .stats import UNRESOLVED, compare, interval, seeds_for_half_width
from .sweep import SEED_KEY, override_key

FIRST_SEEDS = 3          # every group gets these before any verdict (an interval needs 2; 3 is less noisy)
MAX_SEEDS_LIMIT = 1000

RESOLVED, CAPPED, NEEDS, RUNNING_STATE, BASELINE = "resolved", "capped", "needs", "running", "baseline"


@dataclass(frozen=True)
class AutoSpec:
    """What a `--seeds auto` study aims for (recorded with the study, read back when it continues)."""

    max_seeds: int
    target_ci: float | None = None   # half-width of the 95% interval, in accuracy points
    vs: str | None = None            # the baseline group's full key

    @property
    def first_seeds(self) -> int:
        return min(FIRST_SEEDS, self.max_seeds)

    def to_dict(self) -> dict:
        return {"seeds": "auto", "max_seeds": self.max_seeds, "target_ci": self.target_ci, "vs": self.vs}

    @classmethod
    def from_dict(cls, spec: dict) -> "AutoSpec | None":
        if spec.get("seeds") != "auto":
            return None
        return cls(int(spec["max_seeds"]), spec.get("target_ci"), spec.get("vs"))

    def describe(self, vs_label: str | None = None) -> str:
        aims = []
        if self.target_ci is not None:
            aims.append(f"each group's 95% interval within ±{self.target_ci:g}")
        if self.vs is not None:
            aims.append(f"each group's difference to {vs_label or self.vs} resolved (p < 0.05)")
        return (f"seeds until {' and '.join(aims)}: {self.first_seeds} per group first, then the groups furthest "
                f"from resolved first, at most {self.max_seeds} per group")


def plan_groups(plan) -> list[dict]:
    """The plan's groups as find_group takes them: full key, short name, config."""
    from .names import name_groups

    configs = {r.group: r.config_name for r in plan.runs}
    names = name_groups(configs, configs)
    return [{"group": g, "label": names[g], "config": c} for g, c in configs.items()]


def parse_auto(max_seeds: int | str | None, target_ci: float | str | None, vs: str | None, groups: Sequence[dict],
               flags: tuple[str, str, str] = ("--max-seeds", "--target-ci", "--vs")) -> AutoSpec:
    """An AutoSpec from the command line or the launch form; `groups`: the plan's groups as
    {"group", "label", "config"} (the baseline is looked up among them). ConfigError (one line,
    naming the flag) on bad input."""
    from .studies import find_group

    max_flag, target_flag, vs_flag = flags
    if max_seeds is None or str(max_seeds).strip() == "":
        raise ConfigError(f"{max_flag}: --seeds auto needs a cap, the most runs per group (e.g. {max_flag} 10)")
    try:
        cap = int(str(max_seeds).strip())
    except ValueError:
        raise ConfigError(f"{max_flag} {max_seeds}: expected a whole number of runs per group (2 or more)") from None
    if not 2 <= cap <= MAX_SEEDS_LIMIT:
        raise ConfigError(f"{max_flag} {cap}: expected 2 to {MAX_SEEDS_LIMIT} runs per group")
    target = None
    if target_ci is not None and str(target_ci).strip() != "":
        try:
            target = float(str(target_ci).strip())
        except ValueError:
            raise ConfigError(f"{target_flag} {target_ci}: expected a half-width in accuracy points, e.g. 0.5") from None
        if not 0 < target < 100:
            raise ConfigError(f"{target_flag} {target_ci}: expected a half-width above 0 (accuracy points), e.g. 0.5")
    baseline = None
    if vs is not None and vs.strip():
        baseline = find_group(list(groups), vs, vs_flag)
        if len(groups) < 2:
            raise ConfigError(f"{vs_flag} {vs}: the study has one group; a comparison needs two or more")
    if target is None and baseline is None:
        raise ConfigError(f"--seeds auto: say when a group is resolved: {target_flag} PP (the interval's half-width) "
                          f"and/or {vs_flag} GROUP")
    return AutoSpec(cap, target, baseline)


# ---------------------------------------------------------------- the state, from the store


@dataclass
class GroupState:
    """One group of the study as the store has it: seeds done (with their best accuracy), in
    flight (queued, starting, live), to resume (stopped, crashed), spent (failed, pruned)."""

    group: str
    base_seed: int
    done: dict[int, float] = field(default_factory=dict)
    pending: set[int] = field(default_factory=set)
    resumable: dict[int, str] = field(default_factory=dict)   # seed -> run id
    spent: set[int] = field(default_factory=set)

    @property
    def used(self) -> set[int]:
        return set(self.done) | self.pending | set(self.resumable) | self.spent

    @property
    def coming(self) -> int:
        """Results it has or will have: done, in flight, to resume."""
        return len(self.done) + len(self.pending) + len(self.resumable)

    def next_seeds(self) -> Iterable[int]:
        used, k = self.used, 0
        while True:
            if self.base_seed + k not in used:
                yield self.base_seed + k
            k += 1


def _seed_from(overrides: Sequence[str]) -> int | None:
    for item in reversed(list(overrides)):
        if override_key(item) == SEED_KEY:
            try:
                return int(item.partition("=")[2])
            except ValueError:
                return None
    return None


def study_state(store, plan, starting: Iterable[str] = ()) -> list[GroupState]:
    """The plan's groups (cifar_tui.sweep.Plan, one run per group) as the store has them.
    `starting`: run ids a launcher has started whose run has no row yet (their queue items say
    which group and seed they are)."""
    from .studies import run_seed

    groups = {r.group: GroupState(r.group, r.seed) for r in plan.runs}
    of_run: dict[str, tuple[GroupState, int]] = {}
    for row in store.study_runs(plan.study):
        g = groups.get(row.get("group_key"))
        seed = run_seed(row)
        if g is None or seed is None:
            continue
        of_run[row["run_id"]] = (g, seed)
        status = row["status"]
        if status == COMPLETED and row.get("best_acc") is not None:
            g.done[seed] = float(row["best_acc"])
        elif status in LIVE or status == QUEUED:
            g.pending.add(seed)
        elif status in (STOPPED, CRASHED):
            g.resumable[seed] = row["run_id"]
        elif status in (FAILED, PRUNED, COMPLETED):
            g.spent.add(seed)
    starting = set(starting)
    for item in store.study_queue(plan.study):
        if item["state"] != ITEM_QUEUED and item.get("run_id") not in starting:
            continue  # started: its run has a row now (or is someone else's concern)
        if item.get("resume_of"):
            g, seed = of_run.get(item["resume_of"], (None, None))
        else:
            g = groups.get(item.get("group_key"))
            seed = _seed_from(item["overrides"]) if g is not None else None
            seed = g.base_seed if g is not None and seed is None else seed
        if g is not None and seed is not None:
            g.resumable.pop(seed, None)
            g.pending.add(seed)
    for g in groups.values():  # a seed done counts as done, whatever else it has
        g.pending -= set(g.done)
        g.spent -= set(g.done) | g.pending
        for seed in set(g.resumable) & (set(g.done) | g.pending):
            del g.resumable[seed]
    return list(groups.values())


# ---------------------------------------------------------------- the decision


@dataclass
class GroupPlan:
    """Where a group stands: `state` resolved | capped | needs | running | baseline, `need` the runs it is
    estimated to need in all, `why` in words (the CLI prints it, the study tab shows it)."""

    state: str
    need: int
    why: str


@dataclass
class Decision:
    start: list[tuple[str, int]]      # (group, seed) to queue, most needed first
    resume: list[str]                 # run ids to resume
    groups: dict[str, GroupPlan]
    finished: bool                    # nothing in flight, nothing to start: every group resolved or capped


def _need(spec: AutoSpec, g: GroupState, base: GroupState | None) -> tuple[int, list[str]]:
    """Runs the group needs in all by the criteria met so far (its own n where it is resolved)."""
    n, needs, why = len(g.done), [], []
    if spec.target_ci is not None:
        stats = interval(list(g.done.values()))
        if stats["ci"] is not None and (stats["ci"][1] - stats["ci"][0]) / 2 <= spec.target_ci:
            why.append(f"interval ±{(stats['ci'][1] - stats['ci'][0]) / 2:.2f}")
        else:
            more = seeds_for_half_width(stats["std"], spec.target_ci) if stats["std"] is not None else None
            needs.append(more or spec.max_seeds + 1)  # unknown, or beyond any estimate: more than the cap
            why.append(f"interval {'±%.2f' % ((stats['ci'][1] - stats['ci'][0]) / 2) if stats['ci'] else 'none yet'}"
                       f" > ±{spec.target_ci:g}")
    if base is not None and g is not base:
        c = compare(base.done, g.done)
        if c["verdict"] != UNRESOLVED:
            why.append(f"{c['verdict']} (p={c['p']:.3f})")
        else:
            needs.append(c["seeds"] or spec.max_seeds + 1)
            why.append("difference not resolved" + (f" (p={c['p']:.2f})" if c["p"] is not None else ""))
    return max([n, *needs]) if needs else n, why


def decide(spec: AutoSpec, groups: Sequence[GroupState], slots: int) -> Decision:
    """What the study runs next: every stopped or crashed run resumed, then up to `slots` new
    runs, one at a time to the group that still needs the most (ties: in plan order)."""
    base = next((g for g in groups if g.group == spec.vs), None)
    plans: dict[str, GroupPlan] = {}
    want: dict[str, int] = {}
    for g in groups:
        if len(g.done) < spec.first_seeds:
            want[g.group] = spec.first_seeds
            plans[g.group] = GroupPlan(NEEDS, spec.first_seeds, f"{len(g.done)} of its first {spec.first_seeds} seeds")
            continue
        need, why = _need(spec, g, base)
        want[g.group] = min(need, spec.max_seeds)
        plans[g.group] = GroupPlan(RESOLVED if need <= len(g.done) else NEEDS, need, ", ".join(why))
    if base is not None:  # the baseline keeps up with every group still compared with it
        others = [want[g.group] for g in groups if g is not base and plans[g.group].state == NEEDS]
        if plans[base.group].state == RESOLVED:
            plans[base.group] = GroupPlan(BASELINE, len(base.done), plans[base.group].why or "the groups' baseline")
        if others and max(others) > want[base.group]:
            want[base.group] = max(others)
            if plans[base.group].state == BASELINE:
                plans[base.group] = GroupPlan(NEEDS, max(others), "the baseline: keeps up with the groups compared with it")
    start: list[tuple[str, int]] = []
    room = {g.group: min(want[g.group], spec.max_seeds) - g.coming for g in groups}
    spent = {g.group: len(g.used) for g in groups}
    seeds = {g.group: g.next_seeds() for g in groups}
    order = {g.group: i for i, g in enumerate(groups)}
    while len(start) < slots:
        open_ = [k for k, r in room.items() if r > 0 and spent[k] < spec.max_seeds]
        if not open_:
            break
        pick = max(open_, key=lambda k: (room[k], -order[k]))
        start.append((pick, next(seeds[pick])))
        room[pick] -= 1
        spent[pick] += 1
    for g in groups:
        p = plans[g.group]
        if p.state == NEEDS and len(g.used) >= spec.max_seeds and not g.pending and not g.resumable:
            plans[g.group] = GroupPlan(CAPPED, p.need, f"{p.why}; capped at {spec.max_seeds} seeds")
        elif g.pending or g.resumable or any(s[0] == g.group for s in start):
            plans[g.group] = GroupPlan(RUNNING_STATE if p.state in (RESOLVED, BASELINE) else p.state, p.need, p.why)
    resume = [rid for g in groups for rid in g.resumable.values()]
    in_flight = any(g.pending for g in groups)
    return Decision(start, resume, plans, finished=not (start or resume or in_flight))


def planned_run(plan, group: str, seed: int):
    """The plan's run of `group`, with `seed` (its overrides and validated config)."""
    run = next(r for r in plan.runs if r.group == group)
    overrides = [o for o in run.overrides if override_key(o) != SEED_KEY] + [f"{SEED_KEY}={seed}"]
    cfg = run.cfg.model_copy(update={"train": run.cfg.train.model_copy(update={"seed": seed})})
    return overrides, cfg


def enqueue_run(sup, plan, group: str, seed: int, nproc: int = 1) -> int:
    """Queue the run `decide` chose (group, seed) on a supervisor, as a run of the study; its item id."""
    overrides, cfg = planned_run(plan, group, seed)
    config = next(r.config for r in plan.runs if r.group == group)
    return sup.enqueue(config, overrides, nproc, cfg=cfg, study=plan.study, group=group)


def recorded_study(recorded: dict | None, study: str, configs_dir=None):
    """(plan, AutoSpec) of an auto study from what the store recorded (`store.study(name)`), for a
    driver that continues it (the TUI, a SLURM worker); ConfigError when it is not one, or its
    configs no longer validate."""
    from .sweep import make_plan

    spec = (recorded or {}).get("spec") or {}
    auto = AutoSpec.from_dict(spec)
    if recorded is None or auto is None:
        raise ConfigError(f"{study} is not a --seeds auto study")
    plan = make_plan(spec.get("names") or [], spec.get("sets") or [], 1, extra=spec.get("extra") or [],
                     configs_dir=configs_dir, study=study)
    return plan, auto
