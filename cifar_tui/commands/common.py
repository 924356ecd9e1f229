"""What every command shares: the consoles, the one-line error exit, the workspace, loading a
config, the data/device/epochs flags, the launcher options, the line about a finished run."""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from enum import Enum
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

from engine.errors import ConfigError
from engine.record.status import COMPLETED, PRUNED, STOPPED

from ..workspace import Workspace

EXIT_BAD_INPUT = 2
EXIT_STOPPED = 130

# piped output is not cut to 80 columns (tables stay one row per line)
_PIPE_WIDTH = None if sys.stdout.isatty() else int(os.environ.get("COLUMNS", 200))
console = Console(width=_PIPE_WIDTH)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 1000)


def fail(message: str, code: int = EXIT_BAD_INPUT) -> None:
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)  # a key may look like markup
    raise typer.Exit(code)


def warn(message: str) -> None:
    err_console.print(f"[yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)


class _State:
    ws: Workspace


state = _State()


def command_line() -> str:
    """This command as typed (recorded with a study, and by the engines it starts)."""
    import shlex

    return " ".join(["cifar-tui", shlex.join(sys.argv[1:])]).strip()


def open_store():
    """The workspace's store; what opening it found (a damaged database, an unreadable run) is printed."""
    store = state.ws.store()
    for line in state.ws.take_warnings():
        warn(line)
    return store


def supervisor(**kwargs):
    """A Supervisor for this command (a CLI's queue items are its own); warnings printed."""
    from ..supervisor import Supervisor

    sup = Supervisor(state.ws, shared_queue=False, **kwargs)
    for line in state.ws.take_warnings():
        warn(line)
    return sup


def load_experiment(name: str, overrides: list[str]):
    """A config by name or path with its overrides; a bad one is the one-line error exit."""
    from engine.config import load_config

    try:
        return load_config(name, overrides, state.ws.configs)
    except ConfigError as exc:
        fail(str(exc))


# ---------------------------------------------------------------- launching


class DataSource(str, Enum):
    cifar100 = "cifar100"
    synthetic = "synthetic"


def cli_overrides(overrides: list[str], data: Optional[DataSource], device: Optional[str], epochs: Optional[int]) -> list[str]:
    """The --set overrides with those of --data, --device and --epochs after them."""
    extra = list(overrides)
    if data is not None:
        extra.append(f"data.source={data.value}")
    if device is not None:
        extra.append(f"train.device={device}")
    if epochs is not None:
        extra.append(f"train.epochs={epochs}")
    return extra


class Launcher(str, Enum):
    local = "local"
    local_submitit = "local-submitit"
    slurm = "slurm"


@dataclass
class LaunchOptions:
    launcher: Launcher = Launcher.local
    nproc: int = 1
    nnodes: int = 1
    max_parallel: Optional[int] = None
    slurm_partition: Optional[str] = None
    slurm_gpus_per_node: Optional[int] = None
    slurm_time: int = 24 * 60
    workers: Optional[int] = None   # --seeds auto on SLURM: array tasks that share the study

    def supervisor(self):
        """The supervisor for this launcher (a CLI's own queue)."""
        if self.launcher is Launcher.slurm:
            from ..launchers import SlurmLauncher, SlurmOptions

            spawner = SlurmLauncher(SlurmOptions(partition=self.slurm_partition, gpus_per_node=self.slurm_gpus_per_node,
                                                 time_min=self.slurm_time, nodes=self.nnodes, nproc=self.nproc))
            return supervisor(gpus=[], max_parallel=sys.maxsize, spawner=spawner)
        if self.nnodes > 1:
            raise ConfigError(f"--nnodes {self.nnodes}: a study runs on several nodes with --launcher slurm only")
        if self.launcher is Launcher.local_submitit:
            from ..launchers import SubmititSpawner

            return supervisor(max_parallel=self.max_parallel, spawner=SubmititSpawner())
        return supervisor(max_parallel=self.max_parallel)


# ---------------------------------------------------------------- a finished run


def print_finish(reaped, code: int, end: dict | None, json_mode: bool) -> int:
    """One line about a finished run (the summary under its progress)."""
    if code == EXIT_BAD_INPUT:
        err_console.print(f"[bold red]error:[/] {escape(reaped.refusal or 'the engine refused its input')}",
                          highlight=False, soft_wrap=True)
        return code
    if json_mode:
        return code
    run_id, run_dir = reaped.run_id, reaped.launched.run_dir
    where = f"run dir {run_dir}  (store {state.ws.home / 'cifar_tui.db'})"
    if end is None:
        err_console.print(f"[red]run {run_id} ended without an end event (exit {code}); "
                          f"see {run_dir / 'stdout.log'}; resume with: cifar-tui resume {run_id}[/]")
        return code if code else 1
    status = end.get("status")
    best = end.get("best_acc")
    if status == COMPLETED:
        early = f" ({escape(end['reason'])})" if end.get("reason") else ""  # e.g. train.early_stop
        console.print(f"[green]completed[/] {run_id}: best test acc {best if best is None else f'{best:.2f}'}"
                      f" @ epoch {end.get('best_epoch')}{early}; {where}")
    elif status == STOPPED:
        console.print(f"[yellow]stopped[/] {run_id} {stopped_at(end)}; "
                      f"continue with: cifar-tui resume {run_id}; {where}")
    elif status == PRUNED:
        console.print(f"[yellow]pruned[/] {run_id} {stopped_at(end)}: "
                      f"{escape(str(end.get('reason') or 'a search ended it'))}; {where}")
    else:
        err_console.print(f"[bold red]failed[/] {run_id}: {escape(str(end.get('error')))}; {escape(where)}", highlight=False)
    return code


def stopped_at(end: dict) -> str:
    """Where a stopped run stopped: `at step 3 of epoch 1 (0 epochs done)` or `after 2 epochs`."""
    done, step = end.get("epochs_done") or 0, end.get("step_in_epoch")
    if step:
        return f"at step {step} of epoch {done + 1} ({done} epoch{'s' if done != 1 else ''} done)"
    return f"after {done} epoch{'s' if done != 1 else ''}"
