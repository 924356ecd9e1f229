"""Workspace layout: the runs home, the data root, run ids and run directories."""
from __future__ import annotations

import os
import re
import secrets
import time
from pathlib import Path

from .config import ConfigError

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


def run_dir(home: Path, run_id: str) -> Path:
    return Path(home) / check_run_id(run_id)


def read_run_config(run_dir: Path):
    """The ExperimentConfig of runs/<id>/config.yaml (validated), or ConfigError."""
    from .config import config_from_dict, read_config_file

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
