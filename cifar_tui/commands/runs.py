"""The run lifecycle on the command line: run, resume, stop, runs (list, rm, prune).

Every start goes through cifar_tui.supervisor (the store's queue and GPU leases), so a CLI
shares the GPUs with every other CLI and TUI on the machine. A RUN_ID may be a unique prefix.
"""
from __future__ import annotations

import json
import re
import sys
import time
from typing import List, Optional

import typer
from rich.markup import escape

from engine.errors import ConfigError
from engine.record.paths import events_path
from engine.record.status import COMPLETED, CRASHED, FAILED, LIVE, PRUNED, QUEUED, RUNNING, STALLED, STOPPED, TERMINAL

from . import listing
from .common import (EXIT_BAD_INPUT, EXIT_STOPPED, DataSource, Launcher, LaunchOptions, cli_overrides, console,
                     err_console, fail, load_experiment, print_finish, state, supervisor, warn)

STALLED_STOP_GRACE_S = 3.0  # stop: how long a stalled run gets to honour the first request
STATUS_COLORS = {RUNNING: "cyan", STALLED: "magenta", QUEUED: "magenta", COMPLETED: "green", STOPPED: "yellow",
                 FAILED: "red", CRASHED: "red", PRUNED: "yellow"}


def _resolve(ref: str) -> str:
    """A run id from a unique prefix, looked up in the run directories (nothing is created)."""
    from engine.record.paths import resolve_run_id

    try:
        return resolve_run_id(state.ws.home, ref)
    except ConfigError as exc:
        fail(str(exc))


def _start_when_free(sup, item_id: int, json_mode: bool):
    """Pump until our item starts (Started) or is refused (exit 2); Ctrl-C while waiting cancels it."""
    from ..supervisor import Started

    said = None
    try:
        while True:
            for outcome in sup.pump():
                if outcome.item_id != item_id:
                    continue
                if isinstance(outcome, Started):
                    return outcome
                fail(f"{outcome.config}: {outcome.reason}")
            if not any(q["id"] == item_id for q in sup.own_queued()):
                fail("the queued run was cancelled", code=1)
            if sup.blocked and sup.blocked != said:
                (err_console if json_mode else console).print(f"waiting for a slot: {escape(sup.blocked)}")
            said = sup.blocked
            time.sleep(0.5)
    except KeyboardInterrupt:
        sup.cancel(item_id)
        raise typer.Exit(EXIT_STOPPED)


def _follow_started(sup, started, json_mode: bool, from_offset: int = 0) -> int:
    from ..follow import follow
    from ..supervisor import ALERT_EVERY_S

    def tick() -> None:
        sup.keep_alive()
        for notice in sup.alerts(every_s=ALERT_EVERY_S):  # our run stalled: say so (and notify)
            if notice.run_id == started.run_id:
                err_console.print(f"[magenta]{notice.status}[/] {escape(notice.message)}", highlight=False)

    code, end = follow(started.launched, json_mode=json_mode, console=console, from_offset=from_offset, tick=tick)
    reaped = next(r for r in sup.reap() if r.run_id == started.run_id)  # the process has exited
    return print_finish(reaped, code, end, json_mode)


def run(
    names: List[str] = typer.Argument(..., help="Experiment names (or YAML paths); several run one after another."),
    overrides: List[str] = typer.Option([], "--set", help="Override a key: a.b=value (repeatable)."),
    data: Optional[DataSource] = typer.Option(None, "--data", help="Data source (overrides data.source)."),
    device: Optional[str] = typer.Option(None, "--device", help="auto | cpu | cuda | cuda:N"),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="Overrides train.epochs."),
    as_json: bool = typer.Option(False, "--json", help="Print the events as JSON lines instead of progress."),
    nproc: int = typer.Option(1, "--nproc", min=1, help="Processes (GPUs) per node: runs under torchrun with DDP."),
    nnodes: int = typer.Option(1, "--nnodes", min=1, help="Nodes for torchrun."),
    node_rank: int = typer.Option(0, "--node-rank", min=0, help="This node's rank for torchrun."),
    master_addr: Optional[str] = typer.Option(None, "--master-addr", help="torchrun rendezvous address."),
    parallel: bool = typer.Option(False, "--parallel", help="Run the names side by side: one run per free GPU "
                                  "(--nproc GPUs for a DDP run), pinned with CUDA_VISIBLE_DEVICES."),
    max_parallel: Optional[int] = typer.Option(None, "--max-parallel", min=1, help="With --parallel: at most this many "
                                               "runs alive at a time on this host (default: one per GPU; 1 without GPUs)."),
    seeds: str = typer.Option("1", "--seeds", metavar="N|auto", help="A study: each run repeated with seeds "
                              "train.seed+0..N-1; auto: seeds added until each group is resolved (--target-ci, --vs), "
                              "at most --max-seeds."),
    max_seeds: Optional[int] = typer.Option(None, "--max-seeds", metavar="N", help="With --seeds auto (required): "
                                            "the most runs per group."),
    target_ci: Optional[float] = typer.Option(None, "--target-ci", metavar="PP", help="With --seeds auto: a group is "
                                              "resolved when its 95% interval is within ±PP accuracy points."),
    vs: Optional[str] = typer.Option(None, "--vs", metavar="GROUP", help="With --seeds auto: a group is resolved when "
                                     "its difference to GROUP (a group of the plan, as --dry-run names it) is (p<0.05)."),
    study: Optional[str] = typer.Option(None, "--study", help="A study's name (default: config name + time); "
                                        "an existing one continues (done runs skipped, stopped ones resumed)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan (grid x seeds); start nothing."),
    launcher: Launcher = typer.Option(Launcher.local, "--launcher", help="local | local-submitit | slurm (submitit)."),
    slurm_partition: Optional[str] = typer.Option(None, "--slurm-partition", help="SLURM partition."),
    slurm_gpus_per_node: Optional[int] = typer.Option(None, "--slurm-gpus-per-node", min=1,
                                                      help="GPUs per node of each job (default: --nproc)."),
    slurm_time: int = typer.Option(24 * 60, "--slurm-time", min=1, help="Time limit of each job, minutes."),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="With --seeds auto --launcher slurm: SLURM "
                                          "tasks that each take the study's next run until it is done (default 1)."),
) -> None:
    """Train in the foreground (headless). Ctrl-C stops cleanly and keeps the run resumable.

    On GPUs each run takes free GPUs through the workspace's GPU leases (shared with every other
    cifar-tui on this machine) and waits while none is free. A comma list in --set
    (optim.lr=1e-3,3e-3) or --seeds N makes a study: the grid times the seeds, queued one run per
    GPU (one at a time on the CPU); --dry-run prints the plan."""
    from ..follow import follow_many
    from .auto import seeds_option
    from .studies import is_sweep, sweep

    n_seeds, auto = seeds_option(seeds, max_seeds, target_ci, vs)
    if workers is not None and (auto is None or launcher is not Launcher.slurm):
        fail(f"--workers {workers}: with --seeds auto --launcher slurm only (a study of --seeds N on SLURM is one "
             "job array, a task per run; on this host, --max-parallel sets runs at a time)")
    if is_sweep(overrides, n_seeds, study, dry_run, launcher) or auto:
        opts = LaunchOptions(launcher=launcher, nproc=nproc, nnodes=nnodes, max_parallel=max_parallel,
                             slurm_partition=slurm_partition, slurm_gpus_per_node=slurm_gpus_per_node,
                             slurm_time=slurm_time, workers=workers)
        sweep(names, overrides, cli_overrides([], data, device, epochs), seeds=n_seeds, study=study, dry_run=dry_run,
              opts=opts, as_json=as_json, auto=auto)
        return
    extra = cli_overrides(overrides, data, device, epochs)
    configs = [load_experiment(n, extra) for n in names]  # all checked before anything starts
    torchrun_args = None
    if nnodes > 1 or master_addr:
        torchrun_args = [f"--nnodes={nnodes}", f"--node-rank={node_rank}"] + ([f"--master-addr={master_addr}"] if master_addr else [])
    try:
        # one after another: no cap besides the GPU leases (the user asked for this run now)
        sup = supervisor(max_parallel=max_parallel if parallel else sys.maxsize)
        sup.check_fits(nproc)
    except ConfigError as exc:
        fail(str(exc))
    try:
        _say_long_runs(sup, configs, nproc, as_json)
        if parallel:
            for name, cfg in zip(names, configs):
                sup.enqueue(name, extra, nproc, cfg=cfg, torchrun_args=torchrun_args)
            raise typer.Exit(follow_many(sup, json_mode=as_json, console=console,
                                         finish=lambda reaped, code, end: print_finish(reaped, code, end, as_json)))
        final = 0
        for name, cfg in zip(names, configs):
            started = _start_when_free(sup, sup.enqueue(name, extra, nproc, cfg=cfg, torchrun_args=torchrun_args), as_json)
            code = _follow_started(sup, started, as_json)
            final = final or code
            if code in (EXIT_BAD_INPUT, EXIT_STOPPED):
                break
        raise typer.Exit(final)
    finally:
        sup.close()


def _say_long_runs(sup, configs, nproc: int, json_mode: bool) -> None:
    """Before the runs start: the time of each that will take over an hour on its device (from
    earlier runs here, else a short probe: cifar_tui.estimate). A small run is not measured."""
    from ..estimate import HOUR, Estimator, format_estimate, surely_under

    out = err_console if json_mode else console
    estimator = Estimator(sup.store, gpus=sup.gpus)
    for cfg in configs:
        if surely_under(cfg, HOUR):
            continue
        if estimator.needs_probe(cfg, nproc=nproc):
            key = estimator.key(cfg, nproc=nproc)
            out.print(f"measuring how fast {key.model} trains on {key.device} (a few seconds; "
                      f"CIFAR_TUI_ESTIMATE_PROBE=off skips it)…", highlight=False)
        estimate = estimator.estimate(cfg, nproc=nproc, probe=True)
        if estimate.known and estimate.seconds >= HOUR:
            out.print(f"[yellow]estimate:[/] {escape(cfg.name)} takes {escape(format_estimate(estimate))}",
                      highlight=False)


def resume(run_id: str = typer.Argument(..., help="Run id or a unique prefix of it (see `cifar-tui runs`)."),
           as_json: bool = typer.Option(False, "--json", help="Print the events as JSON lines."),
           epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="Train to N epochs in all; extends a "
                                                "completed run that kept its resume state (train.keep: best+last)."),
           launcher: Launcher = typer.Option(Launcher.local, "--launcher", help="local | local-submitit | slurm "
                                             "(a run stopped by its SLURM time limit continues as a new job)."),
           slurm_partition: Optional[str] = typer.Option(None, "--slurm-partition", help="SLURM partition."),
           slurm_gpus_per_node: Optional[int] = typer.Option(None, "--slurm-gpus-per-node", min=1),
           slurm_time: int = typer.Option(24 * 60, "--slurm-time", min=1, help="Time limit of the job, minutes.")) -> None:
    """Continue a stopped, failed or crashed run from its last checkpoint (or extend a completed one with --epochs)."""
    from .model import check_resume_epochs

    run_id = _resolve(run_id)
    if launcher is Launcher.slurm:
        from ..launch import recorded_processes

        world, local = recorded_processes(state.ws.home / run_id)
        opts = LaunchOptions(launcher=launcher, nproc=local, nnodes=max(1, world // local),
                             slurm_partition=slurm_partition, slurm_gpus_per_node=slurm_gpus_per_node,
                             slurm_time=slurm_time)
        sup = opts.supervisor()
    elif launcher is Launcher.local_submitit:
        sup = LaunchOptions(launcher=launcher, max_parallel=sys.maxsize).supervisor()
    else:
        sup = supervisor(max_parallel=sys.maxsize)
    try:
        try:
            check_resume_epochs(run_id, sup.store.run(run_id), epochs)
            item = sup.resume(run_id, epochs=epochs)
        except ConfigError as exc:
            fail(str(exc))
        if sup.schedules_itself:
            from ..supervisor import Submitted

            try:
                outcomes = sup.submit_queued()
            except ConfigError as exc:  # sbatch refused it (SubmissionRefused): nothing queued
                fail(str(exc))
            for outcome in outcomes:
                if not isinstance(outcome, Submitted):
                    fail(f"{run_id}: {outcome.reason}")
                console.print(f"resuming {run_id} as SLURM job {outcome.job_id}; follow it with: cifar-tui runs")
            return
        events = events_path(state.ws.home / run_id)
        offset = events.stat().st_size if events.exists() else 0  # show only what this resume adds
        from ..launch import resume_point

        (err_console if as_json else console).print(f"resuming {run_id} {resume_point(state.ws.home / run_id)}",
                                                    highlight=False)
        started = _start_when_free(sup, item, as_json)
        raise typer.Exit(_follow_started(sup, started, as_json, from_offset=offset))
    finally:
        sup.close()


def stop(run_id: str = typer.Argument(..., help="Run id or a unique prefix of it."),
         wait: float = typer.Option(60.0, "--wait", help="Seconds to wait for the run to write its checkpoint.")) -> None:
    """Stop a run started elsewhere (TUI, another shell) gracefully, as Ctrl-C does."""
    from ..launch import wait_for_exit

    run_id = _resolve(run_id)  # before the store is opened: a bad id writes nothing
    sup = supervisor(gpus=[])
    try:
        was = sup.status(run_id)
        try:
            pid = sup.stop(run_id)
        except ConfigError as exc:
            fail(str(exc))
        if pid is None:  # a batch job, or a run on another host: asked through its run dir, its job cancelled
            console.print(f"stopping {run_id} (stop requested in its run dir; its job, if any, cancelled) ...")
            if sup.store.run(run_id) is None:
                console.print(f"{run_id}: cancelled before it started")
                return
            if not _wait_not_live(sup, run_id, wait):
                fail(f"run {run_id} did not stop within {wait:.0f}s", code=1)
        else:
            console.print(f"stopping {run_id} (pid {pid}) ...")
            if was == STALLED and not wait_for_exit(pid, STALLED_STOP_GRACE_S):
                # its loop never reaches the next step, where a stop request is honoured; a second
                # request stops it at once (`end` event written, resumable from its last checkpoint)
                console.print(f"{run_id} is stalled: asking again; it stops at once, from its last checkpoint")
                sup.stop(run_id)
            if not wait_for_exit(pid, wait):
                stuck = (f"; it may be stuck inside the GPU driver or a collective: kill -9 {pid} ends it (it then "
                         f"shows as crashed and resumes from its last checkpoint)") if was == STALLED else ""
                fail(f"run {run_id} did not stop within {wait:.0f}s{stuck}", code=1)
        row = sup.store.run(run_id)
        console.print(f"{run_id}: {row['status'] if row else STOPPED}; resume with: cifar-tui resume {run_id}")
    finally:
        sup.close()


def _wait_not_live(sup, run_id: str, wait: float) -> bool:
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if (sup.store.run(run_id) or {}).get("status") not in LIVE:
            return True
        time.sleep(0.5)
    return False


# ---------------------------------------------------------------- runs: list, rm, prune

runs_app = typer.Typer(help="Every run with its status (and the queue); `runs rm`, `runs prune` delete runs.",
                       invoke_without_command=True, no_args_is_help=False)


def _data_of(overrides: list[str]) -> str:
    return next((o.split("=", 1)[1] for o in reversed(overrides) if o.startswith("data.source=")), "-")


@runs_app.callback(invoke_without_command=True)
def runs_list(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="One JSON object per line."),
              stall_after: Optional[str] = typer.Option(None, "--stall-after", help="A live run without a step for "
                                                        "this long is stalled (90s, 10m, off; default: watch.yaml or 10m)."),
              limit: Optional[int] = listing.limit_option(), show_all: bool = listing.all_option()) -> None:
    """Every run with its status, newest first, queued items first (a table shows the newest 50:
    --all, --limit N). A run newly seen stalled or crashed is notified (webhook, desktop), once per
    workspace."""
    if ctx.invoked_subcommand is not None:
        return
    from engine.watch_config import load_watch_settings, parse_duration

    try:
        load_watch_settings(state.ws.home)
        stall_s = None if stall_after is None else parse_duration(stall_after, "--stall-after")
    except ConfigError as exc:
        fail(str(exc))
    sup = supervisor(gpus=[], stall_after_s=stall_s)
    try:
        if sup.store.pending_jobs():  # batch jobs not started: ask the scheduler whether they still wait
            from ..launchers import refresh_pending

            for run_id in refresh_pending(sup.store):
                warn(f"{run_id}: its batch job ended before the engine started (see {state.ws.home}/.jobs/)")
        queued, refused, rows = sup.queued(), sup.refused(), sup.runs()
        sup.alerts(rows)
    finally:
        sup.close()
        for line in state.ws.take_warnings():
            warn(line)
    keep = listing.row_limit(limit, show_all, complete=as_json)
    hidden = max(0, len(rows) - keep) if keep is not None else 0
    rows = rows[:keep] if keep is not None else rows
    if as_json:
        for q in refused:
            print(json.dumps({"queue_id": q["id"], "status": "not started", "run_id": q["run_id"], "config": q["config"],
                              "overrides": q["overrides"], "resume_of": q["resume_of"], "error": q["error"],
                              "queued_at": q["created_at"]}))
        for q in queued:
            print(json.dumps({"queue_id": q["id"], "status": QUEUED, "config": q["config"], "overrides": q["overrides"],
                              "nproc": q["nproc"], "resume_of": q["resume_of"], "queued_at": q["created_at"]}))
        for r in rows:
            r.pop("config_json", None)
            print(json.dumps(r))
        return
    print_runs(queued, rows, hidden, refused)


def print_runs(queued: list[dict], rows: list[dict], hidden: int, refused: list[dict] = ()) -> None:
    from ..table_rows import fmt_acc, fmt_duration

    columns = [listing.Column(c) for c in ("run id", "status", "data", "device", "epochs", "best acc", "wall",
                                           "started")]
    flagged = any(r.get("flag") for r in rows)
    if flagged:
        columns.append(listing.Column("note"))
    cells, styles = [], []
    for q in queued:
        what = f"resume {q['resume_of']}" if q["resume_of"] else f"queue #{q['id']} {q['config']}"
        queued_at = time.strftime("%Y-%m-%d %H:%M", time.localtime(q["created_at"]))
        cells.append([what, QUEUED, _data_of(q["overrides"]), f"{q['nproc']} procs" if q["nproc"] > 1 else "-",
                      "-", "-", "-", queued_at, *([""] if flagged else [])])
        styles.append(STATUS_COLORS[QUEUED])
    for r in rows:
        started = time.strftime("%Y-%m-%d %H:%M", time.localtime(r["started_at"])) if r.get("started_at") else "-"
        st = r["status"]
        job = f"{r['launcher']} job {r['job_id']}" if r.get("job_id") else None
        device = (job if st == QUEUED else None) or r.get("device") or job or "-"
        cells.append([r["run_id"], st, r.get("data_source") or "-", device,
                      f"{r.get('epochs_done') or 0}/{r.get('epochs_total') or '?'}", fmt_acc(r.get("best_acc")),
                      fmt_duration(r.get("wall_s")), started, *([r.get("flag") or ""] if flagged else [])])
        styles.append(STATUS_COLORS.get(st, "white"))
    listing.print_table(console, f"Runs in {state.ws.home}", columns, cells, styles, style_column=1)
    listing.hidden_line(console, hidden, "older run", "newest")
    for q in refused:  # launches refused before their run started: listed (as in the TUI) until dismissed
        what = f"resume {q['resume_of']}" if q["resume_of"] else (q["run_id"] or f"queue #{q['id']} {q['config']}")
        console.print(f"[bold red]✖ not started[/] {escape(what)}: {escape(q['error'] or 'its launch was refused')} "
                      f"[dim](cifar-tui runs dismiss {q['id']}; in the TUI's Runs tab l retries, d dismisses)[/]",
                      soft_wrap=True)


@runs_app.command("dismiss")
def runs_dismiss(item_ids: List[int] = typer.Argument(None, help="Queue numbers of refused launches (`runs` shows "
                                                       "them)."),
                 every: bool = typer.Option(False, "--all", help="Every refused launch.")) -> None:
    """Put away launches refused before their run started (nothing is on disk for them: they had no run)."""
    if bool(item_ids) == every:
        fail("give the queue numbers of refused launches (cifar-tui runs shows them) or --all, not both")
    sup = supervisor(gpus=[])
    try:
        refused = {q["id"]: q for q in sup.refused()}
        unknown = [i for i in (item_ids or []) if i not in refused]
        if unknown:
            fail(f"no refused launch #{unknown[0]} (refused: {', '.join(f'#{i}' for i in refused) or 'none'})")
        for item_id in (item_ids or list(refused)):
            if sup.dismiss(item_id):
                q = refused[item_id]
                console.print(f"dismissed #{item_id} {escape(q['run_id'] or q['config'])}")
    finally:
        sup.close()


def _delete(sup, run_ids: list[str], yes: bool) -> None:
    """Ask, then delete; live runs are skipped and named. Exit 1 when any was skipped."""
    from ..supervisor import RunIsLive

    skipped = []
    deletable = []
    for rid in run_ids:
        status = sup.status(rid)
        if status in LIVE or sup.leases.held_by(rid):
            skipped.append((rid, status))
        else:
            deletable.append(rid)
    for rid, status in skipped:
        warn(f"skipped {rid}: it is {status} (stop it first: cifar-tui stop {rid})")
    if deletable:
        console.print("\n".join(f"  {rid}" for rid in deletable))
        if not yes and not typer.confirm(f"Delete {len(deletable)} run{'s' if len(deletable) != 1 else ''} "
                                         "(directories, checkpoints, store rows)? This cannot be undone"):
            console.print("nothing deleted")
            raise typer.Exit(1)
        for rid in deletable:
            try:
                sup.delete(rid)
            except RunIsLive as exc:  # it came alive while we asked
                warn(f"skipped {rid}: {exc}")
                skipped.append((rid, "live"))
                continue
            except OSError as exc:
                fail(f"could not delete {state.ws.home / rid}: {exc.strerror or exc}", code=1)
            console.print(f"deleted {rid}")
    elif not skipped:
        console.print("nothing to delete")
    raise typer.Exit(1 if skipped else 0)


@runs_app.command("rm")
def runs_rm(run_ids: List[str] = typer.Argument(..., help="Run ids or unique prefixes."),
            yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask (for scripts).")) -> None:
    """Delete runs: their directories, checkpoints and store rows. Live runs are never touched."""
    for ref in run_ids:  # every id is checked before the store is opened
        try:
            from engine.record.paths import check_run_id

            check_run_id(ref)
        except ConfigError as exc:
            fail(str(exc))
    sup = supervisor(gpus=[])
    try:
        try:
            resolved = list(dict.fromkeys(sup.resolve(ref) for ref in run_ids))
        except ConfigError as exc:
            fail(str(exc))
        _delete(sup, resolved, yes)
    finally:
        sup.close()


_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_age(text: str) -> float:
    """'30m', '12h', '7d', '2w' -> seconds (ConfigError otherwise)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text or "")
    if not m:
        raise ConfigError(f"--older-than {text!r}: expected a duration like 30m, 12h, 7d or 2w")
    return float(m.group(1)) * _AGE_UNITS[m.group(2)]


@runs_app.command("prune")
def runs_prune(status: str = typer.Option(..., "--status", help=f"Comma list of statuses to delete: {', '.join(TERMINAL)}."),
               older_than: Optional[str] = typer.Option(None, "--older-than", help="Only runs that ended (or last "
                                                         "beat) longer ago than this: 30m, 12h, 7d, 2w."),
               yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask (for scripts).")) -> None:
    """Delete every run with one of the given statuses (e.g. --status failed,stopped --older-than 7d)."""
    wanted = [s.strip() for s in status.split(",") if s.strip()]
    for s in wanted:
        if s not in TERMINAL:
            fail(f"--status {s}: prune deletes ended runs only; expected some of {', '.join(TERMINAL)}")
    if not wanted:
        fail(f"--status: expected some of {', '.join(TERMINAL)}")
    try:
        cutoff = time.time() - parse_age(older_than) if older_than else None
    except ConfigError as exc:
        fail(str(exc))
    sup = supervisor(gpus=[])
    try:
        chosen = []
        for r in sup.runs():
            when = r.get("ended_at") or r.get("heartbeat_at") or r.get("started_at") or 0
            if r["status"] in wanted and (cutoff is None or when <= cutoff):
                chosen.append(r["run_id"])
        _delete(sup, chosen, yes)
    finally:
        sup.close()


def register(app: typer.Typer) -> None:
    app.command()(run)
    app.command()(resume)
    app.command()(stop)
    app.add_typer(runs_app, name="runs")
