"""Starting, stopping and resuming engine processes (shared by the CLI and the TUI).

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

from engine.config import ExperimentConfig, load_config, resolve_config_path
from engine.paths import check_run_id, new_run_id
from engine.store import Store, pid_alive


@dataclass
class Workspace:
    home: Path
    data_root: Path
    configs: Path | None = None

    def store(self) -> Store:
        store = Store(self.home)
        # The run directories are the durable record: a copied-in or lost database
        # is rebuilt from them.
        if not store.conn.execute("SELECT 1 FROM runs LIMIT 1").fetchone() and any(self.home.glob("*/events.jsonl")):
            store.rebuild()
        return store


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
        return self.run_dir / "events.jsonl"


def engine_command(ws: Workspace, *extra: str, nproc: int = 1, torchrun_args: list[str] | None = None) -> list[str]:
    base = ["--home", str(ws.home), "--data-root", str(ws.data_root)]
    if ws.configs:
        base += ["--configs", str(ws.configs)]
    if nproc > 1 or torchrun_args:
        launcher = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}", *(torchrun_args or []),
                    "-m", "engine.train"]
        return launcher + list(extra) + base
    return [sys.executable, "-m", "engine.train", *extra, *base]


def _spawn(cmd: list[str], run_dir: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    run_dir.mkdir(parents=True, exist_ok=True)
    log = open(run_dir / "stdout.log", "ab")
    try:
        child_env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
        # the engine must import the same engine package the launcher uses
        project_root = str(Path(__file__).resolve().parent.parent)
        child_env["PYTHONPATH"] = os.pathsep.join(p for p in (project_root, child_env.get("PYTHONPATH")) if p)
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, env=child_env, cwd=os.getcwd())
    finally:
        log.close()


def launch(ws: Workspace, request: LaunchRequest, *, cfg: ExperimentConfig | None = None, nproc: int = 1,
           torchrun_args: list[str] | None = None, env: dict[str, str] | None = None) -> Launched:
    """Validate (raises ConfigError on bad input, nothing written) and start an engine process."""
    cfg = cfg or request.load(ws)
    path = resolve_config_path(request.config_ref, ws.configs)
    run_id = new_run_id(cfg.name)
    run_dir = ws.home / run_id
    cmd = engine_command(ws, "--config", str(path.resolve()), *[a for o in request.overrides for a in ("--set", o)],
                         "--run-id", run_id, nproc=nproc, torchrun_args=torchrun_args)
    return Launched(run_id, run_dir, _spawn(cmd, run_dir, env))


def resume(ws: Workspace, run_id: str, *, nproc: int = 1, env: dict[str, str] | None = None) -> Launched:
    run_id = check_run_id(run_id)
    run_dir = ws.home / run_id
    cmd = engine_command(ws, "--resume", run_id, nproc=nproc)
    return Launched(run_id, run_dir, _spawn(cmd, run_dir, env))


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
    """Remove a run dir whose engine refused its input before writing anything."""
    if run_dir.is_dir() and not (run_dir / "events.jsonl").exists():
        shutil.rmtree(run_dir, ignore_errors=True)
