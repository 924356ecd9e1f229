"""Workspace layout: the runs home, the data root, run ids and run directories."""
from __future__ import annotations

import os
import re
import secrets
import time
from pathlib import Path
from typing import Iterable

from ..errors import ConfigError

_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,200}$")


def default_home() -> Path:
    return Path(os.environ.get("CIFAR_TUI_HOME") or "runs")


def default_data_root() -> Path:
    return Path(os.environ.get("CIFAR_TUI_DATA") or "data")


def new_run_id(config_name: str) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return f"{config_name}-{stamp}-{secrets.token_hex(2)}"


def check_run_id(run_id: str) -> str:
    if not run_id or "\x00" in run_id or run_id in (".", "..") or ".." in run_id or not _RUN_ID.match(run_id):
        raise ConfigError(f"run id {run_id!r}: expected a plain name like resnet18_baseline-20260101T000000Z-1a2b")
    return run_id


BEST, LAST = "best.pt", "last.pt"
EVENTS_FILE = "events.jsonl"


def events_path(run_dir: Path) -> Path:
    """A run's event stream (engine/record/events.py writes and reads it)."""
    return Path(run_dir) / EVENTS_FILE


def checkpoints_dir(run_dir: Path) -> Path:
    """Where a run keeps best.pt, last.pt and epoch weights."""
    return Path(run_dir) / "checkpoints"


class UnknownRun(ConfigError):
    pass


class AmbiguousRun(ConfigError):
    pass


def resolve_run_id(home: Path, ref: str, known: Iterable[str] = ()) -> str:
    """The run whose id is `ref` or starts with it, among the run directories in `home` and the
    `known` ids (store rows). UnknownRun when none; AmbiguousRun, listing them, when several."""
    ref = check_run_id(ref)
    home = Path(home)
    known = set(known)
    if ref in known or (home / ref).is_dir():
        return ref
    try:
        names = {n for n in os.listdir(home) if n.startswith(ref) and (home / n).is_dir()}
    except OSError:  # no workspace yet
        names = set()
    matches = sorted(names | {k for k in known if k.startswith(ref)})
    if not matches:
        raise UnknownRun(f"run {ref!r}: not found in {home} (see `cifar-tui runs`)")
    if len(matches) > 1:
        shown = ", ".join(matches[:8]) + (f" and {len(matches) - 8} more" if len(matches) > 8 else "")
        raise AmbiguousRun(f"run id {ref!r} is ambiguous: {len(matches)} runs match: {shown}")
    return matches[0]


def read_run_config(run_dir: Path):
    """The ExperimentConfig of runs/<id>/config.yaml (validated), or ConfigError."""
    from ..config import config_from_dict, read_config_file

    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"run {Path(run_dir).name!r}: no config.yaml in {run_dir} (see `cifar-tui runs`)")
    return config_from_dict(read_config_file(path), str(path))


def write_run_config(run_dir: Path, cfg) -> Path:
    """Replace runs/<id>/config.yaml atomically (a resume that extends the run's epochs)."""
    path = Path(run_dir) / "config.yaml"
    tmp = path.with_name(f".config.yaml.tmp-{os.getpid()}")
    tmp.write_text(cfg.to_yaml())
    os.replace(tmp, path)
    return path


def check_out_file(out: Path, suffixes: tuple[str, ...] = (), kind: str = "file") -> Path:
    """An --out file a command may write: its name (one of `suffixes`, when given), its directory
    there and writable. Writability is tried with a file: os.access says yes to root everywhere
    (/proc, a read-only mount). ConfigError with one line otherwise."""
    out = Path(out)
    if suffixes and out.suffix.lower() not in suffixes:
        raise ConfigError(f"--out {out}: expected {'an' if kind[0] in 'aeiou' else 'a'} {kind} name ending in "
                          f"{', '.join(suffixes)}")
    if out.is_dir():
        raise ConfigError(f"--out {out}: is a directory; give a file name")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise ConfigError(f"--out {out}: directory {parent} does not exist")
    if out.exists() and not os.access(out, os.W_OK):
        raise ConfigError(f"--out {out}: not writable")
    probe = parent / f".{out.name}.probe-{os.getpid()}"
    try:
        probe.open("x").close()
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"--out {out}: not writable ({parent}: {exc.strerror or exc})") from None
    return out
