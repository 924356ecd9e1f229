"""What watching runs needs configured: where notifications go and when a run counts as stalled.

One optional file per workspace, ``<home>/watch.yaml`` (the engine, the CLI and the TUI of that
workspace all read it), overridden by environment variables::

    notify:
      url: https://hooks.example.com/T000/B000   # webhook (JSON POST); CIFAR_TUI_NOTIFY_URL overrides
      statuses: [completed, failed, stopped, stalled, crashed]   # the default; `pruned` may be added
      desktop: true                               # notify-send where the machine has a desktop
    stall_after: 10m                              # 0 or off: never; CIFAR_TUI_STALL_AFTER_S overrides

`load_watch_settings` is strict (a bad file or variable is a ConfigError naming it: commands
check it up front and exit 2); `watch_settings` is what long-lived readers use: cached by the
file's mtime, and a bad file gives the defaults (the engine must never fail a run over it).
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Optional, Union

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from .config import ConfigError, _format_validation_error, read_config_file

WATCH_FILE = "watch.yaml"
NOTIFY_URL_ENV = "CIFAR_TUI_NOTIFY_URL"
STALL_AFTER_ENV = "CIFAR_TUI_STALL_AFTER_S"
# A healthy run makes a training step or an evaluation batch far more often than this (the
# slowest we know, ResNet-50 at 224 on a 2-core CPU, takes about a minute a step); a hung NCCL
# collective, GPU or DataLoader shows within it. A false alarm costs a notification, never the run.
STALL_AFTER_DEFAULT_S = 600.0
NOTIFY_ON_DEFAULT = ("completed", "failed", "stopped", "stalled", "crashed")  # pruned: a search prunes many

_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: Any, what: str) -> float:
    """'90', '90s', '10m', '2h', '7d', '2w' -> seconds; 'off' -> 0. ConfigError naming `what` otherwise."""
    if isinstance(text, bool):
        raise ConfigError(f"{what}: expected a duration like 90s, 10m or 2h, got {str(text).lower()}")
    if isinstance(text, (int, float)):
        if not math.isfinite(text) or text < 0:
            raise ConfigError(f"{what}: expected a duration of 0 seconds or more, got {text}")
        return float(text)
    if isinstance(text, str) and text.strip().lower() in ("off", "never", "none"):
        return 0.0
    m = _DURATION.fullmatch(text) if isinstance(text, str) else None
    if not m:
        raise ConfigError(f"{what}: expected a duration like 90s, 10m or 2h (or off), got {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


_URL = re.compile(r"^https?://[^\s/]+")


def _check_url(url: str, what: str) -> str:
    if not _URL.match(url or ""):
        raise ConfigError(f"{what}: expected an http:// or https:// URL, got {url!r}")
    return url


class _Notify(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    url: Optional[str] = None
    statuses: list[Literal["completed", "failed", "stopped", "stalled", "crashed", "pruned"]] = list(NOTIFY_ON_DEFAULT)
    desktop: bool = True

    @field_validator("url")
    @classmethod
    def _url(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and not _URL.match(v):
            raise ValueError(f"expected an http:// or https:// URL, got {v!r}")
        return v


class _WatchFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    notify: _Notify = _Notify()
    stall_after: Optional[Union[int, float, str]] = None


@dataclass(frozen=True)
class WatchSettings:
    notify_url: str | None = None
    notify_on: frozenset[str] = field(default_factory=lambda: frozenset(NOTIFY_ON_DEFAULT))
    desktop: bool = True
    stall_after_s: float | None = STALL_AFTER_DEFAULT_S  # None: stalled detection off

    def notifies(self, status: str) -> bool:
        return status in self.notify_on


def watch_file(home: Path) -> Path:
    return Path(home) / WATCH_FILE


def load_watch_settings(home: Path | None, env: Mapping[str, str] | None = None) -> WatchSettings:
    """The settings of the workspace at `home` (its watch.yaml, then the environment). Strict."""
    env = os.environ if env is None else env
    parsed = _WatchFile()
    path = watch_file(home) if home is not None else None
    if path is not None and path.is_file():
        raw = read_config_file(path)
        if raw is not None and not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping with notify: and stall_after:, got {type(raw).__name__}")
        try:
            parsed = _WatchFile.model_validate(raw or {})
        except ValidationError as exc:
            raise ConfigError(_format_validation_error(str(path), exc)) from None
    stall = STALL_AFTER_DEFAULT_S
    if parsed.stall_after is not None:
        stall = parse_duration(parsed.stall_after, f"{path}: stall_after")
    if env.get(STALL_AFTER_ENV, "").strip():
        stall = parse_duration(env[STALL_AFTER_ENV].strip(), STALL_AFTER_ENV)
    url = parsed.notify.url
    if env.get(NOTIFY_URL_ENV, "").strip():
        url = _check_url(env[NOTIFY_URL_ENV].strip(), NOTIFY_URL_ENV)
    return WatchSettings(notify_url=url, notify_on=frozenset(parsed.notify.statuses), desktop=parsed.notify.desktop,
                         stall_after_s=stall or None)


_cache: dict[Any, tuple[Any, WatchSettings]] = {}


def watch_settings(home: Path | None) -> WatchSettings:
    """`load_watch_settings`, cached while the file and the variables stay the same; a bad file
    or variable gives what the rest still says (or the defaults): readers and the engine never fail on it."""
    path = watch_file(home) if home is not None else None
    try:
        mtime = path.stat().st_mtime_ns if path is not None else None
    except OSError:
        mtime = None
    key = (str(path), os.environ.get(NOTIFY_URL_ENV), os.environ.get(STALL_AFTER_ENV))
    hit = _cache.get(key)
    if hit is not None and hit[0] == mtime:
        return hit[1]
    try:
        settings = load_watch_settings(home)
    except ConfigError:
        try:  # the file is bad: the variables alone
            settings = load_watch_settings(None)
        except ConfigError:
            settings = WatchSettings()
    _cache[key] = (mtime, settings)
    return settings
