"""What every bench section shares: the section interface (Section, BenchContext), the device,
medians, machine facts and the progress lines."""
from __future__ import annotations

import os
import platform
import re
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from engine.config import ConfigError

from .plan import BenchPlan


class _Progress:
    """One Rich progress line per measurement (on stderr), or nothing."""

    def __init__(self, enabled: bool):
        self.progress = None
        if enabled:
            from rich.console import Console
            from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self.progress = Progress(SpinnerColumn(finished_text="[green]✓[/]"), TextColumn("{task.description}"),
                                     TimeElapsedColumn(), console=Console(stderr=True))

    def __enter__(self) -> "_Progress":
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.progress is not None:
            self.progress.stop()

    @contextmanager
    def step(self, description: str) -> Iterator[Callable[[str], None]]:
        """Yields ``note(text)``: the line's text once the measurement is done."""
        result = {"text": ""}

        def note(text: str) -> None:
            result["text"] = text

        if self.progress is None:
            yield note
            return
        task = self.progress.add_task(description, total=1)
        try:
            yield note
        except BaseException:
            self.progress.update(task, description=f"{description}: [red]failed[/]")
            raise
        done = f"{description}: [bold]{result['text']}[/]" if result["text"] else description
        self.progress.update(task, completed=1, description=done)


@dataclass
class BenchContext:
    """What a section gets: the plan, the device, the results dict it adds its keys to, the
    progress lines, a scratch directory, and `timed(name)` for the wall time of its parts."""

    plan: BenchPlan
    device: Any
    out: dict
    prog: _Progress
    workdir: Path
    section_s: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def timed(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        yield
        self.section_s[name] = round(time.perf_counter() - t0, 1)


DetailRow = tuple[str, str, str]  # (what, engine, reference) for the "absolute figures" table


@dataclass(frozen=True)
class Section:
    """One part of `cifar-tui bench`: `run` measures (selected by name in BenchPlan.sections),
    `details` turns its results into rows of the absolute-figures table."""

    name: str
    run: Callable[[BenchContext], None]
    details: Callable[[dict], list[DetailRow]] = lambda results: []


def median(values: list[float]) -> Optional[float]:
    values = [v for v in values if v is not None]
    return float(statistics.median(values)) if values else None


def rounded(value: Optional[float], digits: int = 3) -> Optional[float]:
    return None if value is None else round(float(value), digits)


def number(results: dict, key: str, fmt: str = ",.0f") -> str:
    value = results.get(key)
    return "-" if value is None else format(value, fmt)


def cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def loadavg() -> Optional[list[float]]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def resolve_device(device: str) -> Any:
    if not re.fullmatch(r"auto|cpu|cuda|cuda:\d{1,2}|mps", device or ""):
        raise ConfigError(f"--device: {device!r} is not one of auto, cpu, cuda, cuda:N, mps")
    from engine.ddp import DistInfo, select_device

    try:
        return select_device(device, DistInfo())
    except ConfigError as exc:
        raise ConfigError(str(exc).replace("train.device:", "--device:", 1)) from None


def device_name(device: Any) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_model()} ({cpu_count()} cores)"


def cli_command() -> list[str]:
    exe = Path(sys.executable).parent / "cifar-tui"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "cifar_tui"]


def cpu_seconds(pid: int) -> Optional[float]:
    """User + system CPU seconds of a process (Linux), or None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def time_command(cmd: list[str], env: dict, cwd: Path) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.decode(errors='replace')[-300:]}")
    return elapsed


class Tmux:
    def __init__(self, tmux: str):
        self.base = [tmux, "-L", f"cifar-tui-bench-{os.getpid()}"]
        self.env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "TMUX")}

    def __call__(self, *args: str) -> str:
        return subprocess.run([*self.base, *args], check=True, capture_output=True, text=True, timeout=30,
                              env=self.env).stdout
