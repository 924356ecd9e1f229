"""Where a run came from: the `provenance` object of its `start` event.

    {"git_commit": "3f2a...", "git_dirty": false,           # null, null outside a git checkout
     "versions": {"python", "torch", "timm", "albumentations", "cuda", "cudnn"},  # null where absent
     "gpus": [{"index", "model", "driver", "memory_mb"}],   # [] on the CPU
     "host": "node12", "command": "python -m engine.train ...",
     "launcher_command": "cifar-tui run ...",                # the command that queued it, when known
     "job": {"scheduler": "slurm", "job_id": "1234_0",        # only inside a SLURM / submitit job
             "task_started_at": 1700000000.123}}             # when its task started (cifar-tui's jobs)

Collected once per start (a resumed run gets the provenance of the code that continues it).
Every probe is best-effort: a missing tool or package gives null, never an error.
"""
from __future__ import annotations

import os
import platform
import shlex
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
GIT_TIMEOUT_S = 5.0
LAUNCHER_COMMAND_ENV = "CIFAR_TUI_COMMAND"  # set by cifar-tui for the engines it starts


def _git(root: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=GIT_TIMEOUT_S,
                             stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def git_state(root: Path | None = None) -> tuple[str | None, bool | None]:
    """(commit, dirty) of the checkout holding `root` (default: this project); (None, None) outside one.

    dirty: tracked files differ from the commit, or untracked files that .gitignore does not hide
    exist (a new module is part of what ran)."""
    root = Path(root or PROJECT_ROOT)
    commit = _git(root, "rev-parse", "--verify", "HEAD")
    if commit is None:
        return None, None
    status = _git(root, "status", "--porcelain")
    return commit.strip(), (None if status is None else bool(status.strip()))


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def versions() -> dict[str, Any]:
    out: dict[str, Any] = {"python": platform.python_version(), "torch": _version("torch"), "timm": _version("timm"),
                           "albumentations": _version("albumentations"), "cuda": None, "cudnn": None}
    torch = sys.modules.get("torch")  # only read when the engine has imported it already
    if torch is not None:
        out["torch"] = getattr(torch, "__version__", out["torch"])
        out["cuda"] = getattr(torch.version, "cuda", None)
        try:
            if torch.backends.cudnn.is_available():
                out["cudnn"] = torch.backends.cudnn.version()
        except Exception:  # noqa: BLE001 - a broken CUDA install still trains on the CPU
            pass
    return out


def gpus() -> list[dict[str, Any]]:
    """The GPUs this process sees: model, driver, memory (NVML, else torch); [] without GPUs."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return []
    driver = None
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            driver = pynvml.nvmlSystemGetDriverVersion()
            driver = driver.decode() if isinstance(driver, bytes) else driver
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001 - no NVML (not NVIDIA, or no driver library): the model still counts
        pass
    found = []
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        found.append({"index": i, "model": props.name, "driver": driver, "memory_mb": props.total_memory // 2**20})
    return found


def job_info(env: dict[str, str] | None = None) -> dict[str, Any] | None:
    """The batch job this process runs in (SLURM, or submitit's local executor), if any."""
    env = os.environ if env is None else env
    if env.get("SLURM_JOB_ID"):
        job = env["SLURM_JOB_ID"]
        if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
            job = f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
        info = {"scheduler": "slurm", "job_id": job}
        try:  # when the job script's task started (cifar-tui's SLURM jobs export it): start-up time
            info["task_started_at"] = round(float(env["CIFAR_TUI_TASK_STARTED"]), 3)
        except (KeyError, ValueError):
            pass
        return info
    if env.get("SUBMITIT_LOCAL_JOB_ID"):
        return {"scheduler": "submitit-local", "job_id": env["SUBMITIT_LOCAL_JOB_ID"]}
    return None


def collect(argv: list[str] | None = None, root: Path | None = None) -> dict[str, Any]:
    """The provenance object of a `start` event. argv: the engine's arguments (default sys.argv[1:])."""
    commit, dirty = git_state(root)
    command = [sys.executable, "-m", "engine.train", *(sys.argv[1:] if argv is None else argv)]
    out: dict[str, Any] = {"git_commit": commit, "git_dirty": dirty, "versions": versions(), "gpus": gpus(),
                           "host": socket.gethostname(), "command": shlex.join(command)}
    if os.environ.get(LAUNCHER_COMMAND_ENV):
        out["launcher_command"] = os.environ[LAUNCHER_COMMAND_ENV]
    job = job_info()
    if job:
        out["job"] = job
    return out


def differences(a: dict | None, b: dict | None) -> dict[str, tuple[Any, Any]]:
    """Flattened keys whose values differ between two provenance objects (for a compare view)."""
    def flat(d: Any, prefix: str = "") -> dict[str, Any]:
        if isinstance(d, dict):
            out: dict[str, Any] = {}
            for k, v in d.items():
                out.update(flat(v, f"{prefix}{k}."))
            return out
        return {prefix[:-1]: d}

    fa, fb = flat(a or {}), flat(b or {})
    return {k: (fa.get(k), fb.get(k)) for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)}
