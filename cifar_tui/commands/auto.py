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


def auto_spec(plan, flags: dict):
    """The AutoSpec of a plan from the command line's flags (one line, exit 2, on bad input)."""
    from ..auto_seeds import parse_auto, plan_groups

    try:
        return parse_auto(flags["max_seeds"], flags["target_ci"], flags["vs"], plan_groups(plan))
    except ConfigError as exc:
        fail(str(exc))


def auto_cost(plan, spec, opts, as_json: bool) -> None:
    """The time of the first seeds of every group, and of every group at its cap."""
    from .readout import print_cost

    first = [r.cfg for r in plan.runs for _ in range(spec.first_seeds)]
    most = [r.cfg for r in plan.runs for _ in range(spec.max_seeds)]
    print_cost(first, opts, as_json, prefix=f"first {spec.first_seeds} seeds per group: ")
    if spec.max_seeds > spec.first_seeds:
        print_cost(most, opts, as_json, prefix=f"at most ({spec.max_seeds} per group): ")


def run_auto(plan, flags: dict, opts, *, dry_run: bool, as_json: bool, record: dict) -> int:
    """Check, record and drive a `--seeds auto` study; returns the exit code."""
    from ..auto_seeds import decide, enqueue_run, plan_groups, study_state
    from ..follow import follow_many
    from ..study_workers import StudyLock
    from .common import Launcher, print_finish
    from .readout import print_groups

    spec = auto_spec(plan, flags)
    groups = plan_groups(plan)
    label = {g["group"]: g["label"] for g in groups}
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
    if opts.launcher is Launcher.slurm:
        return submit_workers(plan, spec, opts, record=record, as_json=as_json)
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

        lock = StudyLock(sup.ws, plan.study)  # other drivers of the study (SLURM workers, a TUI) decide under it too

        def refill() -> bool:
            """Queue what the study needs next; True while it waits for runs of others."""
            with lock:
                state = study_state(sup.store, plan, starting=sup.starting())
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
                    enqueue_run(sup, plan, group, seed, opts.nproc)
            for group, p in decision.groups.items():
                text = f"{p.state}: {p.why}" if p.why else p.state
                if said.get(group) != text:
                    said[group] = text
                    say(f"  {label[group]}: {text}")
            others = any(g.pending for g in state) and not sup.children and not sup.own_queued()
            return others and not decision.finished

        code = follow_many(sup, json_mode=as_json, console=console,
                           finish=lambda reaped, c, end: print_finish(reaped, c, end, as_json), refill=refill)
    finally:
        sup.close()
    if not as_json:
        print_groups(plan.study, vs=spec.vs)
        if code == EXIT_STOPPED:
            console.print(f"interrupted; continue the study with the same command (--study {plan.study})")
    return code


def submit_workers(plan, spec, opts, *, record: dict, as_json: bool) -> int:
    """`--launcher slurm --workers W`: the study recorded and W workers submitted as one job array
    (cifar_tui/auto_workers.py); they run it without us."""
    from ..auto_seeds import plan_groups
    from ..auto_workers import submit_study
    from ..launchers import SlurmLauncher, SlurmOptions
    from .common import state

    if opts.nnodes > 1:
        fail(f"--nnodes {opts.nnodes}: a --seeds auto worker trains each run on its own node (--nproc GPUs of it)")
    label = {g["group"]: g["label"] for g in plan_groups(plan)}
    try:
        launcher = SlurmLauncher(SlurmOptions(partition=opts.slurm_partition, gpus_per_node=opts.slurm_gpus_per_node,
                                              time_min=opts.slurm_time, nproc=opts.nproc))
        done = submit_study(state.ws, plan, spec, record, opts.workers or 1, launcher, nproc=opts.nproc,
                            command=command_line())
    except ConfigError as exc:  # another kind of study of that name, or sbatch refusing (one line naming the option)
        fail(str(exc))
    if as_json:
        print(json.dumps({"study": done.study, "continued": done.continued, "completed": done.finished,
                          "nothing_left": done.nothing_left, "submitted": done.job_ids, "alive": done.alive}))
        return 0
    verb = "continuing" if done.continued else "new"
    console.print(f"study {plan.study} ({verb}): {len(label)} group{'s' if len(label) != 1 else ''}, "
                  f"{spec.describe(label.get(spec.vs))}; "
                  f"{done.finished} runs completed so far", highlight=False)
    if done.nothing_left:
        console.print(f"study {plan.study}: nothing left to run (every group resolved or capped)")
        return 0
    if done.alive:
        console.print(f"{len(done.alive)} worker{'s' if len(done.alive) != 1 else ''} of this study already queued "
                      f"or running (SLURM {', '.join(done.alive)})")
    if done.job_ids:
        console.print(f"submitted {len(done.job_ids)} worker{'s' if len(done.job_ids) != 1 else ''} as SLURM job "
                      f"{done.job_ids[0].split('_')[0]} ({', '.join(done.job_ids)}); "
                      f"their logs: {state.ws.home}/.jobs/",
                      highlight=False)
    console.print(f"follow it with: cifar-tui studies, cifar-tui leaderboard --by group --study {plan.study}   "
                  f"(the TUI: its study tab); the same command again tops the workers up", highlight=False)
    return 0
