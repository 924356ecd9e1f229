"""Studies on the command line: sweeps (`run` with comma lists and --seeds), the seed's
experiments (`reproduce`), `studies`, `leaderboard --by group` and `show RUN_ID`.

Every run of a study is queued on the supervisor (one run per GPU, one at a time on the CPU;
`--launcher slurm` submits them all as one job array) and records its study and group. Run the
same command with the same `--study` again to continue a study: what already completed (or is
running) is skipped, a stopped, failed or crashed run is resumed, the rest is started.
"""
from __future__ import annotations

import json
import sys
import time
from typing import List, Optional

import typer
from rich.table import Table

from engine.errors import ConfigError
from engine.record.status import COMPLETED

from .common import (EXIT_STOPPED, DataSource, Launcher, LaunchOptions, cli_overrides, command_line, console,
                     err_console, fail, open_store, print_finish, state, warn)
from .readout import print_cost, print_groups


# ---------------------------------------------------------------- what a study already has


# ---------------------------------------------------------------- running a plan


def print_plan(plan, notes: dict[int, str], as_json: bool) -> None:
    from ..sweep import plan_lines

    if as_json:
        from ..names import name_groups

        configs = {r.group: r.config_name for r in plan.runs}
        names = name_groups(configs, configs)
        for r in plan.runs:
            print(json.dumps({"study": plan.study, "index": r.index, "config": r.config_name, "overrides": list(r.overrides),
                              "seed": r.seed, "group": r.group, "label": names[r.group], "existing": notes.get(r.index)}))
        return
    sys.stdout.write("\n".join(plan_lines(plan, notes)) + "\n")
    sys.stdout.flush()


def execute(plan, opts: LaunchOptions, *, as_json: bool, kind: str, spec: dict, held: dict | None = None) -> int:
    """Queue a plan's runs on the supervisor and follow them (local launchers), or submit them
    (slurm). held: {seed: (PlannedRun, teacher config)}: distillation runs that start once the
    teacher run of their seed (in this study) completed, with that run as their teacher."""
    from ..follow import follow_many
    from ..studies import queue_plan, seed_of

    held = dict(held or {})
    try:
        sup = opts.supervisor()
    except ConfigError as exc:
        fail(str(exc))
    try:
        new_study = sup.store.study(plan.study) is None
        try:
            queued = queue_plan(sup, plan, kind=kind, spec=spec, nproc=opts.nproc, command=command_line(),
                                hold=[run for run, _ in held.values()])
        except ConfigError as exc:
            sup.cancel_own()
            fail(str(exc))
        print_plan(plan, queued["notes"], as_json)
        print_cost([r.cfg for r in queued["start"]], opts, as_json)
        # a held run already done, running or resumable is handled like any other
        held = {seed: pair for seed, pair in held.items() if pair[0] in queued["start"]}
        for (_, seed), row in queued["existing"].items():
            if seed in held and row["status"] == COMPLETED and row["config_name"] == held[seed][1]:
                _release(sup, plan, held.pop(seed)[0], row["run_id"])  # its teacher finished earlier
        if not sup.own_queued() and not held:
            console.print(f"study {plan.study}: nothing left to run")
            return 0
        if sup.schedules_itself:
            return _submit(sup, plan, held, queued["items"], new_study=new_study)

        def finish(reaped, code, end) -> int:
            row = sup.store.run(reaped.run_id) or {}
            seed = seed_of(row)
            if seed in held and row.get("config_name") == held[seed][1]:
                run, _ = held.pop(seed)
                if (end or {}).get("status") == COMPLETED:
                    _release(sup, plan, run, reaped.run_id)
                else:
                    warn(f"{run.config_name} (seed {seed}) not started: its teacher run {reaped.run_id} did not complete")
            return print_finish(reaped, code, end, as_json)

        code = follow_many(sup, json_mode=as_json, console=console, finish=finish)
        for seed, (run, teacher) in held.items():
            warn(f"{run.config_name} (seed {seed}) not started: no completed {teacher} run of seed {seed} in this study")
    finally:
        sup.close()
    if not as_json:
        print_groups(plan.study)
        if code == EXIT_STOPPED:
            console.print(f"interrupted; continue the study with the same command (--study {plan.study})")
    return code


def _release(sup, plan, run, teacher_run: str) -> int:
    """Queue a held distillation run with its teacher run."""
    overrides = [*run.overrides, f"loss.kd.teacher={teacher_run}"]
    return sup.enqueue(run.config, overrides, 1, study=plan.study, group=run.group)


def _submit(sup, plan, held: dict, items: dict, *, new_study: bool) -> int:
    """SLURM: everything at once (one job array); a distillation run after its teacher's job (afterok).
    sbatch refusing (an unknown partition, a time over the limit): one line, exit 2, nothing kept."""
    from ..launchers import SubmissionRefused
    from ..supervisor import Submitted

    code = 0
    submitted = {}  # (config name, seed) -> (run id, job id)
    try:
        outcomes = sup.submit_queued()
    except SubmissionRefused as exc:
        sup.cancel_own()
        if new_study and not sup.store.study_runs(plan.study):
            sup.store.delete_study(plan.study)
        fail(str(exc))
    for o in outcomes:
        if isinstance(o, Submitted):
            console.print(f"submitted {o.run_id} as SLURM job {o.job_id}")
            planned = items.get(o.item_id)
            if planned is not None:
                submitted[(planned.config_name, planned.seed)] = (o.run_id, o.job_id)
        else:
            err_console.print(f"error: {o.config}: {o.reason}", highlight=False)
            code = 2
    for seed, (run, teacher) in held.items():
        if (teacher, seed) not in submitted:
            warn(f"{run.config_name} (seed {seed}) not submitted: no {teacher} run of seed {seed} was submitted")
            continue
        teacher_run, teacher_job = submitted[(teacher, seed)]
        sup.spawner.options.dependency = f"afterok:{teacher_job}"
        _release(sup, plan, run, teacher_run)
        for o in sup.submit_queued():
            if isinstance(o, Submitted):
                console.print(f"submitted {o.run_id} as SLURM job {o.job_id} (after job {teacher_job})")
    console.print(f"follow them with: cifar-tui runs   (study {plan.study})")
    return code


# ---------------------------------------------------------------- sweep (from `run`)


def is_sweep(overrides: List[str], seeds: int, study: Optional[str], dry_run: bool, launcher: Launcher) -> bool:
    from ..sweep import is_study

    return is_study(overrides, seeds, study) or dry_run or launcher is not Launcher.local


def sweep(names: List[str], overrides: List[str], extra: List[str], *, seeds: int, study: Optional[str],
          dry_run: bool, opts: LaunchOptions, as_json: bool, auto: Optional[dict] = None) -> None:
    """`cifar-tui run NAME... --set k=a,b --seeds N|auto [--study S] [--dry-run] [--launcher ...]`;
    auto: the flags of --seeds auto (commands/auto.py drives it)."""
    from ..sweep import make_plan

    try:
        plan = make_plan(names, overrides, seeds, extra=extra, configs_dir=state.ws.configs, study=study)
    except ConfigError as exc:
        fail(str(exc))
    if auto is not None:
        from .auto import run_auto

        record = {"names": list(names), "sets": list(overrides), "extra": list(extra)}
        raise typer.Exit(run_auto(plan, auto, opts, dry_run=dry_run, as_json=as_json, record=record))
    if dry_run:
        print_plan(plan, {}, as_json)
        print_cost([r.cfg for r in plan.runs], opts, as_json)
        return
    spec = {"names": list(names), "sets": list(overrides), "extra": list(extra), "seeds": seeds}
    raise typer.Exit(execute(plan, opts, as_json=as_json, kind="sweep", spec=spec))


# ---------------------------------------------------------------- reproduce


def reproduce(
    seeds: int = typer.Option(1, "--seeds", min=1, help="Runs per experiment (seeds 0..N-1 above the config's)."),
    study: Optional[str] = typer.Option(None, "--study", help="Study name (default: seed-<time>); an existing one continues."),
    only: Optional[str] = typer.Option(None, "--only", help="Comma list of the experiments to run (default: the seed's 11 "
                                       "and resnet18_augment_fresh)."),
    overrides: List[str] = typer.Option([], "--set", help="Override a key in every run: a.b=value (repeatable)."),
    data: Optional[str] = typer.Option(None, "--data", help="cifar100 | synthetic (overrides data.source)."),
    device: Optional[str] = typer.Option(None, "--device", help="auto | cpu | cuda | cuda:N"),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="Overrides train.epochs."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan; start nothing."),
    as_json: bool = typer.Option(False, "--json", help="JSON lines instead of progress."),
    launcher: Launcher = typer.Option(Launcher.local, "--launcher", help="local | local-submitit | slurm"),
    max_parallel: Optional[int] = typer.Option(None, "--max-parallel", min=1, help="Runs at a time on this host."),
    slurm_partition: Optional[str] = typer.Option(None, "--slurm-partition"),
    slurm_gpus_per_node: Optional[int] = typer.Option(None, "--slurm-gpus-per-node", min=1),
    slurm_time: int = typer.Option(24 * 60, "--slurm-time", min=1, help="Minutes per job."),
) -> None:
    """Run the seed's 11 experiments as one study (the distillation run after its teacher), and
    resnet18_augment_fresh beside resnet18_augment (its augmentation drawn afresh every epoch, where
    the seed's run fixed it per position), then `cifar-tui report --study S --out report.md` writes
    the seed's table with ours beside it."""
    from ..study_report import KD_TEACHERS, REPRODUCE_NAMES
    from ..sweep import make_plan, split_list, study_stamp

    names = list(REPRODUCE_NAMES)
    if only:
        names = [n.strip() for n in only.split(",") if n.strip()]
        unknown = [n for n in names if n not in REPRODUCE_NAMES]
        if unknown or not names:
            fail(f"--only {only}: expected some of {', '.join(REPRODUCE_NAMES)}")
    for o in overrides:
        try:
            if len(split_list(o)) > 1:
                fail(f"--set {o}: reproduce runs the seed's settings; sweep lists belong to `cifar-tui run`")
        except ConfigError as exc:
            fail(str(exc))
    try:
        source = DataSource(data) if data else None
    except ValueError:
        fail(f"--data {data}: expected cifar100 or synthetic")
    extra = cli_overrides([], source, device, epochs)
    try:
        plan = make_plan(names, overrides, seeds, extra=extra, configs_dir=state.ws.configs,
                         study=study or f"seed-{study_stamp()}")
    except ConfigError as exc:
        fail(str(exc))
    opts = LaunchOptions(launcher=launcher, max_parallel=max_parallel, slurm_partition=slurm_partition,
                         slurm_gpus_per_node=slurm_gpus_per_node, slurm_time=slurm_time)
    if dry_run:
        print_plan(plan, {}, as_json)
        print_cost([r.cfg for r in plan.runs], opts, as_json)
        return
    held = {}
    for run in plan.runs:
        teacher = KD_TEACHERS.get(run.config_name)
        if teacher and teacher in names:
            held[run.seed] = (run, teacher)
    spec = {"names": names, "sets": list(overrides), "extra": extra, "seeds": seeds}
    raise typer.Exit(execute(plan, opts, as_json=as_json, kind="seed", spec=spec, held=held))


# ---------------------------------------------------------------- studies, groups, show


def studies_cmd(as_json: bool = typer.Option(False, "--json", help="One JSON object per line.")) -> None:
    """Every study: kind, runs by status, groups, best run."""
    from ..table_rows import fmt_acc
    from ..studies import list_studies

    store = open_store()
    try:
        found = list_studies(store)
    finally:
        store.close()
    if as_json:
        for s in found:
            print(json.dumps({**{k: v for k, v in s.items() if k != "runs"}, "runs": [r["run_id"] for r in s["runs"]]}))
        return
    table = Table(title=f"Studies in {state.ws.home}", title_justify="left")
    for col in ("study", "kind", "config", "runs", "groups", "best acc", "best run", "created"):
        table.add_column(col)
    for s in found:
        counts = ", ".join(f"{n} {st}" for st, n in sorted(s["by_status"].items())) or "0"
        created = time.strftime("%Y-%m-%d %H:%M", time.localtime(s["created_at"])) if s["created_at"] else "-"
        table.add_row(s["name"], s["kind"], s["config"] or "-", counts, str(s["groups"]), fmt_acc(s["best_acc"]),
                      s["best_run"] or "-", created)
    console.print(table)
    if not found:
        console.print("no studies yet: cifar-tui run NAME --set optim.lr=1e-3,3e-3 --seeds 3")


def show_run_if_run(name: str) -> bool:
    """`cifar-tui show RUN_ID`: True when `name` is a run (an exact run dir, or a unique prefix of
    one and no config of that name); prints its resolved config, then its provenance."""
    import yaml

    from engine.config import resolve_config_path
    from engine.record.events import read_events, summarize
    from engine.record.paths import events_path
    from engine.record.paths import resolve_run_id

    home = state.ws.home
    if not (home / name).is_dir():
        try:
            resolve_config_path(name, state.ws.configs)
            return False  # a config name
        except ConfigError:
            pass
        try:
            name = resolve_run_id(home, name)
        except ConfigError as exc:
            if "ambiguous" in str(exc):
                fail(str(exc))
            return False  # neither: the config lookup names what is wrong
    run_dir = home / name
    events = summarize(read_events(events_path(run_dir)))
    start = events.get("start")
    config_file = run_dir / "config.yaml"
    try:
        config_text = config_file.read_text()
    except OSError:
        if not start:
            fail(f"run {name}: neither {config_file} nor a `start` event can be read")
        config_text = yaml.safe_dump(start.get("config") or {}, sort_keys=False)
    start = start or {}
    store = open_store()
    try:
        row = store.run(name) or {}
    finally:
        store.close()
    meta = {"run_id": name, "status": row.get("status") or ("unknown" if not start else None),
            "study": start.get("study"), "group": start.get("group"), "started": events["starts"],
            "provenance": start.get("provenance")}
    sys.stdout.write(config_text.rstrip("\n") + "\n---\n")
    sys.stdout.write(yaml.safe_dump(meta, sort_keys=False))
    return True


def register(app: typer.Typer) -> None:
    app.command()(reproduce)
    app.command("studies")(studies_cmd)
