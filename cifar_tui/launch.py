"""Spawning, stopping and resuming engine processes (cifar_tui.supervisor decides when and where).

An engine runs as its own OS process in its own session, stdin detached, stdout and
stderr going to runs/<id>/stdout.log: it outlives the launcher, and no pipe held by
the launcher can kill it.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from engine.config import ConfigError, ExperimentConfig, load_config, resolve_config_path
from engine.record.events import latest_event, latest_start
from engine.record.job import child_pids
from engine.record.paths import check_run_id, events_path, new_run_id
from engine.record.status import pid_alive

from .workspace import Workspace



@dataclass
class LaunchRequest:
    config_ref: str                      # name from configs/ or a YAML path
    overrides: list[str] = field(default_factory=list)

    def load(self, ws: Workspace) -> ExperimentConfig:
        return load_config(self.config_ref, self.overrides, ws.configs)


@dataclass
class Launched:
    run_id: str
    run_dir: Path
    process: subprocess.Popen

    @property
    def events_path(self) -> Path:
        return events_path(self.run_dir)


def engine_command(ws: Workspace, *extra: str, nproc: int = 1, torchrun_args: list[str] | None = None) -> list[str]:
    base = ["--home", str(ws.home), "--data-root", str(ws.data_root)]
    if ws.configs:
        base += ["--configs", str(ws.configs)]
    if nproc > 1 or torchrun_args:
        # PyTorch's torchrun, through engine.torchrun (which passes the engine's exit codes on).
        # On one node --standalone picks a free rendezvous port: runs side by side do not collide.
        standalone = [] if torchrun_args else ["--standalone"]
        launcher = [sys.executable, "-m", "engine.torchrun", *standalone, f"--nproc-per-node={nproc}",
                    *(torchrun_args or []), "-m", "engine.train"]
        return launcher + list(extra) + base
    return [sys.executable, "-m", "engine.train", *extra, *base]


class TorchrunProcess(subprocess.Popen):
    """A DDP run's process: torchrun's agent, whose children are the ranks of this node.

    Signalled itself, the agent tears the group down: it signals each worker's process group
    (DataLoader workers too), SIGKILLs what is left after its shutdown timeout (30 s) and exits
    with an error. So a stop request (SIGINT, SIGTERM: Ctrl-C forwarded by the CLI, the TUI's
    stop) goes to the workers instead: every rank stops at the same step (the trainer
    all-reduces the request), rank 0 writes its checkpoint and `end` event, all exit 0, and
    torchrun ends on its own. `cifar-tui stop` signals rank 0 (the pid in the store) to the same
    effect. Other signals, or no readable /proc, go to the agent."""

    def send_signal(self, sig: int) -> None:
        workers = child_pids(self.pid) if sig in (signal.SIGINT, signal.SIGTERM) and self.poll() is None else []
        for pid in workers:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        if not workers:
            super().send_signal(sig)


def _spawn(cmd: list[str], run_dir: Path, env: dict[str, str] | None = None, *,
           distributed: bool = False) -> subprocess.Popen:
    run_dir.mkdir(parents=True, exist_ok=True)
    log = open(run_dir / "stdout.log", "ab")
    try:
        child_env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
        # the engine must import the same engine package the launcher uses
        project_root = str(Path(__file__).resolve().parent.parent)
        child_env["PYTHONPATH"] = os.pathsep.join(p for p in (project_root, child_env.get("PYTHONPATH")) if p)
        popen = TorchrunProcess if distributed else subprocess.Popen
        return popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                     start_new_session=True, env=child_env, cwd=os.getcwd())
    finally:
        log.close()


def item_labels(item: dict, cfg: ExperimentConfig) -> dict[str, str | None]:
    """The study and group a new run of a queue item records: the item's, the group by default computed."""
    from .sweep import group_key

    return {"study": item.get("study"), "group": item.get("group_key") or group_key(cfg.name, item["overrides"])}


def run_arguments(ws: Workspace, request: LaunchRequest, run_id: str, *, study: str | None = None,
                  group: str | None = None) -> list[str]:
    """The engine's arguments for a new run of `request` (config by absolute path, overrides, labels)."""
    path = resolve_config_path(request.config_ref, ws.configs)
    args = ["--config", str(path.resolve()), *[a for o in request.overrides for a in ("--set", o)], "--run-id", run_id]
    if study:
        args += ["--study", study]
    if group:
        args += ["--group", group]
    return args


def launch(ws: Workspace, request: LaunchRequest, *, cfg: ExperimentConfig | None = None, nproc: int = 1,
           torchrun_args: list[str] | None = None, env: dict[str, str] | None = None,
           run_id: str | None = None, study: str | None = None, group: str | None = None) -> Launched:
    """Validate (raises ConfigError on bad input, nothing written) and start an engine process.

    run_id: the id the launcher chose (the supervisor leases GPUs for it before spawning).
    study, group: recorded in the run's `start` event and store row."""
    cfg = cfg or request.load(ws)
    run_id = check_run_id(run_id) if run_id else new_run_id(cfg.name)
    run_dir = ws.home / run_id
    cmd = engine_command(ws, *run_arguments(ws, request, run_id, study=study, group=group), nproc=nproc,
                         torchrun_args=torchrun_args)
    return Launched(run_id, run_dir, _spawn(cmd, run_dir, env, distributed=nproc > 1 or bool(torchrun_args)))


def recorded_processes(run_dir: Path) -> tuple[int, int]:
    """(world_size, processes per node) of a run's latest start; (1, 1) when it never started."""
    start = latest_start(run_dir)
    if not start:
        return 1, 1
    world = int(start.get("world_size") or 1)
    return world, int(start.get("local_world_size") or world)


def resume(ws: Workspace, run_id: str, *, nproc: int | None = None, torchrun_args: list[str] | None = None,
           env: dict[str, str] | None = None, epochs: int | None = None) -> Launched:
    """Continue a run from its last checkpoint; by default with as many processes as it had.

    The batch size is the global batch, so any process count continues the same batches;
    a run that spanned several nodes needs the torchrun options again (ConfigError otherwise).
    `epochs`: train to that many epochs in all (extends a completed run that kept last.pt)."""
    run_id = check_run_id(run_id)
    run_dir = ws.home / run_id
    if nproc is None:
        world, local = recorded_processes(run_dir)
        if world > local and not torchrun_args:
            raise ConfigError(
                f"run {run_id} ran on {world // local} nodes; resume it on every node with "
                f"python -m torch.distributed.run --nnodes={world // local} --node-rank=R --master-addr=HOST "
                f"--nproc-per-node={local} -m engine.train --resume {run_id} --home {ws.home}")
        nproc = local
    extra = ["--epochs", str(epochs)] if epochs is not None else []
    cmd = engine_command(ws, "--resume", run_id, *extra, nproc=nproc, torchrun_args=torchrun_args)
    return Launched(run_id, run_dir, _spawn(cmd, run_dir, env, distributed=nproc > 1 or bool(torchrun_args)))


def resume_point(run_dir: Path) -> str:
    """Where a resume of this run continues, in words: from its last checkpoint (and where that
    is, from its latest `end` event), or from the start when it has none yet (stopped or killed
    before its first checkpoint: the engine then starts over)."""
    from engine.record.paths import LAST, checkpoints_dir

    if not (checkpoints_dir(run_dir) / LAST).is_file():
        return "no checkpoint yet: it starts over from epoch 1"
    end = latest_event(run_dir, "end") or {}
    done, step = end.get("epochs_done"), end.get("step_in_epoch")
    if step:
        return f"from its last checkpoint: epoch {done + 1}, step {step}"
    if done is not None:
        return f"from its last checkpoint, after epoch {done}"
    return "from its last checkpoint"


def request_stop(pid: int, sig: int = signal.SIGTERM) -> bool:
    """Ask an engine to stop gracefully (checkpoint + `end` event). False if it is gone."""
    if not pid_alive(pid):
        return False
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


def wait_for_exit(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.1)
    return not pid_alive(pid)


def last_error_line(run_dir: Path) -> str | None:
    try:
        lines = (run_dir / "stdout.log").read_text(errors="replace").strip().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        if line.startswith("error: "):
            return line[len("error: "):]
    return lines[-1] if lines else None


def discard_unstarted(run_dir: Path) -> None:
    """Remove a run dir whose engine refused its input before writing anything.

    Only a dir that holds nothing but the launcher's stdout.log goes: a refused resume of a
    run dir with a config and checkpoints but no events file (copied in, an old run) stays."""
    if run_dir.is_dir() and {p.name for p in run_dir.iterdir()} <= {"stdout.log"}:
        shutil.rmtree(run_dir, ignore_errors=True)
