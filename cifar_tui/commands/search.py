"""`cifar-tui tune` (an Optuna search, cifar_tui/tune.py) and `cifar-tui report` (the seed's
table regenerated, cifar_tui/study_report.py)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape

from engine.errors import ConfigError

from .common import DataSource, Launcher, LaunchOptions, cli_overrides, command_line, console, fail, open_store, state


def tune(
    name: str = typer.Argument(..., help="Experiment name (or YAML path) to search around."),
    params: List[str] = typer.Option([], "--param", help="A search dimension: KEY=log:LOW:HIGH, float:LOW:HIGH, "
                                     "int:LOW:HIGH or choice:A,B (repeatable)."),
    trials: int = typer.Option(20, "--trials", min=1, help="Finished (completed or pruned) trials the study should have."),
    prune: str = typer.Option("none", "--prune", help="none | median | percentile:P | threshold:MIN, on each "
                              "epoch's test accuracy."),
    prune_warmup: int = typer.Option(0, "--prune-warmup", min=0, help="Epochs before a trial may be pruned."),
    prune_startup: int = typer.Option(5, "--prune-startup", min=0, help="Finished trials before pruning starts "
                                      "(median, percentile)."),
    study: Optional[str] = typer.Option(None, "--study", help="Study name (default: config name + time); an "
                                        "existing one continues (after Ctrl-C, a kill, a crash)."),
    overrides: List[str] = typer.Option([], "--set", help="Override a key in every trial: a.b=value (repeatable)."),
    data: Optional[DataSource] = typer.Option(None, "--data", help="Data source (overrides data.source)."),
    device: Optional[str] = typer.Option(None, "--device", help="auto | cpu | cuda | cuda:N"),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="Overrides train.epochs."),
    sampler_seed: Optional[int] = typer.Option(None, "--sampler-seed", help="Seed of the TPE sampler."),
    max_parallel: Optional[int] = typer.Option(None, "--max-parallel", min=1, help="Trials at a time (default: one "
                                               "per GPU, one on the CPU)."),
    launcher: Launcher = typer.Option(Launcher.local, "--launcher", help="local | local-submitit | slurm (workers "
                                      "as a job array)"),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="With --launcher slurm: SLURM tasks that "
                                          "each run trials until the study has --trials (default 1)."),
    slurm_partition: Optional[str] = typer.Option(None, "--slurm-partition", help="SLURM partition."),
    slurm_gpus_per_node: Optional[int] = typer.Option(None, "--slurm-gpus-per-node", min=0,
                                                      help="GPUs per worker (default 1; 0 on the CPU)."),
    slurm_time: int = typer.Option(24 * 60, "--slurm-time", min=1, help="Time limit of each worker, minutes."),
    as_json: bool = typer.Option(False, "--json", help="The best trial as one JSON object at the end."),
) -> None:
    """Search settings with Optuna (TPE): each trial an ordinary run of the study; the best trial
    and its settings printed at the end. Resumable: rerun with the same --study. With --launcher
    slurm, --workers N SLURM tasks share the study (runs/optuna.journal) and the command returns
    once they are submitted."""
    from engine.config import check_plain_name

    from ..sweep import default_study_name
    from ..tune import Param, TuneSpec, Tuner, best_trial, parse_param

    if workers is not None and launcher is not Launcher.slurm:
        fail(f"--workers {workers}: with --launcher slurm only (on this host, --max-parallel sets trials at a time)")
    extra = cli_overrides(list(overrides), data, device, epochs)
    try:
        name_for_study = check_plain_name(study, "--study") if study else default_study_name([name])
        parsed: list[Param] = [parse_param(p) for p in params]
    except ConfigError as exc:
        fail(str(exc))
    store = open_store()
    try:
        recorded = store.study(name_for_study)
        if recorded is not None and recorded["kind"] != "tune":
            fail(f"--study {name_for_study}: already a {recorded['kind']} study; choose another name")
        if recorded is not None:  # continue it: what was asked stays, unless asked again the same way
            spec0 = recorded["spec"]
            if spec0.get("config") != name:
                fail(f"--study {name_for_study}: searches {spec0.get('config')}, not {name}")
            if parsed and [p.text for p in parsed] != spec0.get("params"):
                fail(f"--study {name_for_study}: searches {' '.join(spec0.get('params') or [])}; "
                     "continue it with the same --param options, or none")
            parsed = parsed or [parse_param(p) for p in spec0.get("params") or []]
            extra = extra or list(spec0.get("overrides") or [])
            if prune == "none":
                prune = spec0.get("prune") or "none"
        spec = TuneSpec(config=name, params=parsed, trials=trials, study=name_for_study, prune=prune,
                        prune_warmup=prune_warmup, prune_startup=prune_startup, overrides=extra,
                        sampler_seed=sampler_seed)
    finally:
        store.close()
    if launcher is Launcher.slurm:
        _submit_workers(spec, workers or 1, slurm_partition, slurm_gpus_per_node, slurm_time)
        return
    opts = LaunchOptions(launcher=launcher, max_parallel=max_parallel)
    try:
        sup = opts.supervisor()
        tuner = Tuner(state.ws, sup, spec, say=lambda line: console.print(escape(line), highlight=False))
    except ConfigError as exc:
        fail(str(exc))
    try:
        store = open_store()
        try:
            store.save_study(spec.study, "tune", name, spec.to_dict(), command=command_line())
        finally:
            store.close()
        verb = "continuing" if tuner.continued else "new"
        console.print(f"study {spec.study} ({verb}): {trials} trials of {name} over "
                      f"{', '.join(p.text for p in parsed)}; pruner {spec.prune}")
        from engine.config import load_config

        from .readout import print_cost

        left = max(0, trials - tuner._finished())  # each trial as long as the config's run (pruning shortens some)
        print_cost([load_config(name, extra, state.ws.configs)] * left, opts, as_json=False,
                   prefix=f"{left} trial{'s' if left != 1 else ''} left, at most: ")
        code = tuner.run()
    finally:
        sup.close()
    best = best_trial(state.ws, spec.study)
    if as_json:
        print(json.dumps(best))
    elif best and best["number"] is not None:
        from ..names import short_settings

        settings = short_settings(best["params"])  # as the trial is named everywhere (`--json`: full precision)
        console.print(f"best trial {best['number']}: test acc {best['value']:.2f}  {settings}  (run {best['run_id']})")
        console.print(f"trials: {', '.join(f'{n} {s}' for s, n in sorted(best['states'].items()))}")
    else:
        console.print("no trial completed")
    if code == 130:
        console.print(f"interrupted; continue with: cifar-tui tune {name} --study {spec.study}")
    raise typer.Exit(code)


def _submit_workers(spec, workers: int, partition: Optional[str], gpus_per_node: Optional[int], time_min: int) -> None:
    """`tune --launcher slurm`: the workers submitted as one job array; the search runs on without us."""
    from ..launchers import SlurmLauncher, SlurmOptions
    from ..tune_workers import submit_search

    try:
        launcher = SlurmLauncher(SlurmOptions(partition=partition, gpus_per_node=gpus_per_node, time_min=time_min,
                                              nproc=spec.nproc))
        done = submit_search(state.ws, spec, workers, launcher, command=command_line())
    except ConfigError as exc:  # bad input, or sbatch refusing (one line naming the option)
        fail(str(exc))
    verb = "continuing" if done.continued else "new"
    console.print(f"study {spec.study} ({verb}): {spec.trials} trials of {spec.config} over "
                  f"{', '.join(p.text for p in spec.params)}; pruner {spec.prune}; {done.finished} finished so far")
    if done.finished >= spec.trials:
        console.print(f"study {spec.study}: nothing left to run")
        return
    if done.alive:
        console.print(f"{len(done.alive)} worker{'s' if len(done.alive) != 1 else ''} of this study already queued "
                      f"or running (SLURM {', '.join(done.alive)})")
    if done.job_ids:
        console.print(f"submitted {len(done.job_ids)} worker{'s' if len(done.job_ids) != 1 else ''} as SLURM job "
                      f"{done.job_ids[0].split('_')[0]} ({', '.join(done.job_ids)}); their logs: "
                      f"{state.ws.home}/.jobs/")
    console.print("follow it with: cifar-tui studies, cifar-tui runs   (the TUI: Leaderboard, f: Studies)")


def report(
    out: Path = typer.Option(..., "--out", help="The Markdown file to write (PNGs go to <name>_files/ beside it)."),
    study: Optional[str] = typer.Option(None, "--study", help="One study (default: every run in the workspace)."),
) -> None:
    """The seed's results table with our figures beside it (mean ± std, n, 95% interval, difference,
    epochs, wall time), one line of interpretation per row, a PNG of the curves per experiment."""
    from ..study_report import write_report

    store = open_store()
    try:
        try:
            result = write_report(store, out, study=study)
        except ConfigError as exc:
            fail(str(exc))
        except OSError as exc:
            fail(f"--out {out}: cannot write: {exc.strerror or exc}")
    finally:
        store.close()
    ran = sum(1 for r in result["rows"] if r["groups"])
    console.print(f"wrote {result['path']} ({ran} of {len(result['rows'])} seed experiments ran, "
                  f"{len(result['figures'])} figures)" + ("; synthetic data" if result["synthetic"] else ""))


def register(app: typer.Typer) -> None:
    app.command()(tune)
    app.command()(report)


__all__ = ["register"]
