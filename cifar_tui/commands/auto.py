"""`cifar-tui run NAME --set k=a,b --seeds auto --max-seeds N [--target-ci PP] [--vs GROUP]`: a
study whose groups get seeds until each is resolved or capped (cifar_tui.auto_seeds decides;
this module queues what it decides on the supervisor and follows the runs).

Ctrl-C stops the runs (they checkpoint); the same command with the same --study continues the
study from what the store has: stopped and crashed runs are resumed, the decision is taken
again. Runs another driver started (a TUI, an earlier command still running) are waited for.
"""
from __future__ import annotations

import json
import sys
from typing import Optional

from engine.config import ConfigError

from .common import EXIT_STOPPED, command_line, console, fail


def seeds_option(seeds: str, max_seeds: Optional[int], target_ci: Optional[float],
                 vs: Optional[str]) -> tuple[int, Optional[dict]]:
    """(seeds per group, the auto flags or None) from `--seeds N|auto` and its flags (one line, exit 2)."""
    text = str(seeds).strip().lower()
    if text == "auto":
        if max_seeds is None:
            fail("--max-seeds: --seeds auto needs a cap, the most runs per group (e.g. --max-seeds 10)")
        return 1, {"max_seeds": max_seeds, "target_ci": target_ci, "vs": vs}
    try:
        n = int(text)
    except ValueError:
        fail(f"--seeds {seeds}: expected a whole number of at least 1, or auto")
    if n < 1:
        fail(f"--seeds {n}: expected at least 1 (or auto)")
    for flag, value in (("--max-seeds", max_seeds), ("--target-ci", target_ci), ("--vs", vs)):
        if value is not None:
            fail(f"{flag}: only with --seeds auto (run `cifar-tui leaderboard --by group --vs GROUP` to compare groups)")
    return n, None


def plan_groups(plan) -> list[dict]:
    """The plan's groups as find_group takes them: full key, short name, config."""
    from ..names import name_groups

    configs = {r.group: r.config_name for r in plan.runs}
    names = name_groups(configs, configs)
    return [{"group": g, "label": names[g], "config": c} for g, c in configs.items()]


def auto_spec(plan, flags: dict):
    """The AutoSpec of a plan from the command line's flags (one line, exit 2, on bad input)."""
    from ..auto_seeds import parse_auto

    try:
        return parse_auto(flags["max_seeds"], flags["target_ci"], flags["vs"], plan_groups(plan))
    except ConfigError as exc:
        fail(str(exc))


def auto_cost(plan, spec, opts, as_json: bool) -> None:
    """The time of the first seeds of every group, and of every group at its cap."""
    from .studies import print_cost

    first = [r.cfg for r in plan.runs for _ in range(spec.first_seeds)]
    most = [r.cfg for r in plan.runs for _ in range(spec.max_seeds)]
    print_cost(first, opts, as_json, prefix=f"first {spec.first_seeds} seeds per group: ")
    if spec.max_seeds > spec.first_seeds:
        print_cost(most, opts, as_json, prefix=f"at most ({spec.max_seeds} per group): ")


def run_auto(plan, flags: dict, opts, *, dry_run: bool, as_json: bool, record: dict) -> int:
    """Check, record and drive a `--seeds auto` study; returns the exit code."""
    from ..auto_seeds import decide, planned_run, study_state
    from ..follow import follow_many
    from .runs import _finish
    from .studies import Launcher, print_groups

    spec = auto_spec(plan, flags)
    groups = plan_groups(plan)
    label = {g["group"]: g["label"] for g in groups}
    if opts.launcher is Launcher.slurm:
        fail("--seeds auto: decides after each run, so it runs with --launcher local or local-submitit "
             "(on SLURM: --seeds N)")
    if dry_run:
        lines = [f"study {plan.study}: {len(groups)} group{'s' if len(groups) != 1 else ''}, "
                 f"{spec.describe(label.get(spec.vs))}"]
        lines += [f"  {g['label']}" + ("  (baseline)" if g["group"] == spec.vs else "") for g in groups]
        if as_json:
            for g in groups:
                print(json.dumps({"study": plan.study, "group": g["group"], "label": g["label"],
                                  "baseline": g["group"] == spec.vs, **spec.to_dict()}))
        else:
            sys.stdout.write("\n".join(lines) + "\n")
        auto_cost(plan, spec, opts, as_json)
        return 0
    try:
        sup = opts.supervisor()
    except ConfigError as exc:
        fail(str(exc))
    said: dict[str, str] = {}
    try:
        recorded = sup.store.study(plan.study)
        if recorded is not None and recorded["kind"] != "sweep":
            fail(f"--study {plan.study}: already a {recorded['kind']} study; choose another name")
        sup.store.save_study(plan.study, "sweep", ",".join(plan.names), {**record, **spec.to_dict()},
                             command=command_line())
        say = (lambda line: None) if as_json else (lambda line: console.print(line, highlight=False))
        say(f"study {plan.study}: {len(groups)} groups, {spec.describe(label.get(spec.vs))}")
        auto_cost(plan, spec, opts, as_json)

        def refill() -> bool:
            """Queue what the study needs next; True while it waits for runs of others."""
            state = study_state(sup.store, plan, starting=sup.children)
            slots = max(0, sup.max_parallel - len(sup.children) - len(sup.own_queued()))
            decision = decide(spec, state, slots)
            for run_id in decision.resume:
                if sup.status(run_id) not in ("queued",):
                    try:
                        sup.resume(run_id)
                        say(f"resuming {run_id}")
                    except ConfigError as exc:
                        say(f"[yellow]{run_id} not resumed: {exc}[/]")
            for group, seed in decision.start:
                overrides, cfg = planned_run(plan, group, seed)
                config = next(r.config for r in plan.runs if r.group == group)
                sup.enqueue(config, overrides, opts.nproc, cfg=cfg, study=plan.study, group=group)
            for group, p in decision.groups.items():
                text = f"{p.state}: {p.why}" if p.why else p.state
                if said.get(group) != text:
                    said[group] = text
                    say(f"  {label[group]}: {text}")
            others = any(g.pending for g in state) and not sup.children and not sup.own_queued()
            return others and not decision.finished

        code = follow_many(sup, json_mode=as_json, console=console,
                           finish=lambda reaped, c, end: _finish(reaped, c, end, as_json), refill=refill)
    finally:
        sup.close()
    if not as_json:
        print_groups(plan.study, vs=spec.vs)
        if code == EXIT_STOPPED:
            console.print(f"interrupted; continue the study with the same command (--study {plan.study})")
    return code
