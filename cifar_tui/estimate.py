"""How long a run will take on this machine, before it starts.

From earlier runs of the same model and input size on the same kind of device here (the store's
run rows and epoch times), else from a short measured probe (a few real training steps of the
config in a child process, cached per machine, device, model and input size), else unknown.

    est = Estimator(store)                        # or Estimator.for_home(home): opens the store
    e = est.estimate(cfg, device="auto", nproc=1) # history or a cached probe; never measures
    e = est.estimate(cfg, probe=True)             # may measure (blocks a few seconds: call it off the UI thread)
    e.seconds, e.basis, e.note                    # None when unknown; "history" | "probe" | "unknown"
    format_estimate(e)                            # "about 3 h 20 min on cpu (from 2 earlier runs here)"
    est.total([cfg1, cfg2, ...])                  # a plan's cost: the sum, or None when any is unknown
    est.needs_probe(cfg); p = est.start_probe(cfg); est.record_probe(p, p.result())  # measuring off the UI thread
    surely_under(cfg, HOUR)                       # too small to take an hour anywhere: no need to measure

The time of a run is modelled as epochs x train images x (seconds per train image) plus
evaluations x test images x (seconds per test image, taken as EVAL_COST of a train image's).
History gives the seconds per image from `epoch_s` of earlier runs (the median of their later
epochs). torch is imported only by the probe's child process (cifar_tui/estimate_probe.py).
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from engine.config import ExperimentConfig
from engine.record.status import this_host

HISTORY, PROBE, UNKNOWN = "history", "probe", "unknown"
FULL_TRAIN, FULL_TEST = 50000, 10000   # CIFAR-100's (and the synthetic set's) images
EVAL_COST = 1 / 3                      # a test image (forward only) against a train image (forward + backward)
HISTORY_RUNS = 5                       # the newest matching runs that count
HOUR = 3600.0
# Slower than any model of ours trains on any CPU, per 32x32 image (forward + backward; the largest,
# WRN-28-10, needs ~16 GFLOP, a slow 2-core CPU does ~20 GFLOP/s), times the extras' passes: a run
# whose work at this rate stays under a bound surely does (`surely_under`: no probe needed).
SLOWEST_S_PER_IMAGE = 0.8
EXTRA_COST = {"sam": 2.0, "kd": 1.5, "albumentations": 1.0}
PROBE_TIMEOUT_S = 180.0
FAILED_PROBE_TTL_S = 3600.0           # a failed probe is not tried again for this long
STOPPED = "stopped"                    # the probe was killed (its form closed): nothing learnt
PROBE_ENV = "CIFAR_TUI_ESTIMATE_PROBE"  # "off": never measure (the estimate is history or unknown)


@dataclass(frozen=True)
class Estimate:
    seconds: float | None       # the whole run (every epoch and evaluation); None: unknown
    basis: str                  # HISTORY | PROBE | UNKNOWN
    note: str                   # where the figure comes from, in words
    device: str                 # the device kind it is for: cpu | cuda | mps
    train_s_per_image: float | None = None

    @property
    def known(self) -> bool:
        return self.seconds is not None


@dataclass(frozen=True)
class SpeedKey:
    """What a run's speed depends on most: the machine, the device kind and processes, the model
    and its input size, and the costly extras (two passes of SAM, a teacher, CPU augmentation)."""

    host: str
    device: str
    nproc: int
    backbone: str
    stem: str
    image_size: int
    train_sizes: tuple[int, ...]
    extras: tuple[str, ...]

    @property
    def model(self) -> str:
        sizes = "/".join(map(str, self.train_sizes)) if self.train_sizes else f"{self.image_size}x{self.image_size}"
        return f"{self.backbone} at {sizes}" + (f" with {' + '.join(self.extras)}" if self.extras else "")

    def cache_key(self) -> str:
        return "|".join([self.host, self.device, str(self.nproc), self.backbone, self.stem, str(self.image_size),
                         ",".join(map(str, self.train_sizes)), ",".join(self.extras)])


def device_kind(device: str, gpus: Sequence[str] | None = None) -> str:
    """cpu | cuda | mps for a train.device value ("auto": cuda when GPUs are visible) or a run's
    recorded device ("cuda:0", "cpu x2", "cuda:0,cuda:1 on 2 nodes")."""
    device = (device or "auto").strip()
    if device == "auto":
        if gpus is None:
            from .gpus import visible_gpus

            gpus = visible_gpus()
        return "cuda" if gpus else "cpu"
    return device.split(",")[0].split(":")[0].split()[0]


def _extras(config: dict) -> tuple[str, ...]:
    """The costly extras of a resolved config (as a dict: also an earlier run's recorded one)."""
    optim, loss, data = (config.get(k) or {} for k in ("optim", "loss", "data"))
    return tuple(name for name, on in (("sam", optim.get("sam") is not None), ("kd", loss.get("kd") is not None),
                                        ("albumentations", data.get("augment") == "albumentations")) if on)


def speed_key(cfg: ExperimentConfig, device: str, nproc: int = 1) -> SpeedKey:
    m = cfg.model
    return SpeedKey(this_host(), device, max(1, nproc), m.backbone, m.stem, cfg.data.image_size,
                    tuple(cfg.data.train_sizes), _extras(cfg.to_dict()))


def _images(limit: int, full: int) -> int:
    return min(limit, full) if limit else full


def work(cfg: ExperimentConfig) -> tuple[float, float]:
    """(train images over the run, test images over the run)."""
    epochs, every = cfg.train.epochs, cfg.eval.every
    evals = epochs // every + (1 if epochs % every else 0)  # every `every` epochs, and the last
    return (epochs * _images(cfg.data.train_limit, FULL_TRAIN), evals * _images(cfg.data.test_limit, FULL_TEST))


def _scale(cfg: ExperimentConfig) -> float:
    """Pixels per image against 32x32 (multi-scale: the mean of its sizes)."""
    sizes = cfg.data.train_sizes or [cfg.data.image_size]
    return sum(s * s for s in sizes) / len(sizes) / (32 * 32)


def surely_under(cfg: ExperimentConfig, seconds: float) -> bool:
    """True when the run cannot take `seconds` on any device (a small run: no need to measure)."""
    train, test = work(cfg)
    slowest = SLOWEST_S_PER_IMAGE
    for extra in _extras(cfg.to_dict()):
        slowest *= EXTRA_COST[extra]
    return (train + EVAL_COST * test) * _scale(cfg) * slowest < seconds


def run_seconds(cfg: ExperimentConfig, train_s_per_image: float) -> float:
    train, test = work(cfg)
    return (train + EVAL_COST * test) * train_s_per_image


# ---------------------------------------------------------------------- history


def _row_rate(config: dict, epochs: list[tuple[float, bool]]) -> float | None:
    """Seconds per train image of one earlier run: the median over its epochs (the first left out
    when there are more: it warms up)."""
    data = config.get("data") or {}
    train = _images(int(data.get("train_limit") or 0), FULL_TRAIN)
    test = _images(int(data.get("test_limit") or 0), FULL_TEST)
    rates = [s / (train + (EVAL_COST * test if evaluated else 0)) for s, evaluated in epochs if s and s > 0]
    if len(rates) > 1:
        rates = rates[1:]
    return statistics.median(rates) if rates else None


class Estimator:
    """Estimates from one store (the workspace's history) and the machine's probe cache. Rates are
    read once per speed key: a plan of many runs costs a few queries."""

    def __init__(self, store, *, gpus: Sequence[str] | None = None, cache: Path | None = None):
        self.store = store
        self.gpus = gpus
        self.cache = ProbeCache(cache)
        self._rates: dict[SpeedKey, tuple[float, int] | None] = {}

    @classmethod
    def for_home(cls, home: Path, **kw) -> "Estimator":
        from engine.record.store import Store

        return cls(Store(Path(home)), **kw)

    def key(self, cfg: ExperimentConfig, device: str | None = None, nproc: int = 1) -> SpeedKey:
        return speed_key(cfg, device_kind(device or cfg.train.device, self.gpus), nproc)

    def estimate(self, cfg: ExperimentConfig, device: str | None = None, nproc: int = 1, *,
                 probe: bool = False) -> Estimate:
        """`device`: a train.device value (default the config's). probe=True measures when neither
        the history nor the cache knows (blocking: seconds)."""
        key = self.key(cfg, device, nproc)
        found = self.history_rate(key)
        if found is not None:
            rate, n = found
            runs = "1 earlier run" if n == 1 else f"{n} earlier runs"
            return Estimate(run_seconds(cfg, rate), HISTORY, f"from {runs} of {key.model} on {key.device} here",
                            key.device, rate)
        cached = self.cache.get(key)
        if cached is None and probe and probe_enabled():
            handle = self.start_probe(cfg, device, nproc)
            cached = self.record_probe(handle, handle.result())
        if isinstance(cached, float):
            return Estimate(run_seconds(cfg, cached), PROBE, f"measured: a short probe of {key.model} on {key.device}",
                            key.device, cached)
        why = f"no earlier run of {key.model} on {key.device} here"
        if isinstance(cached, str):
            why += f"; the probe failed: {cached}"
        return Estimate(None, UNKNOWN, why, key.device)

    def start_probe(self, cfg: ExperimentConfig, device: str | None = None, nproc: int = 1) -> "Probe":
        """The probe's child process, started (`.result()` waits for it, `.kill()` ends it)."""
        return Probe(cfg, self.key(cfg, device, nproc))

    def record_probe(self, probe: "Probe", result: float | str) -> float | str:
        """Cache what a probe found (a killed probe found nothing); returns the rate for the run's processes."""
        key = probe.key
        if isinstance(result, float) and key.device == "cuda":
            result /= key.nproc  # one GPU measured; each of nproc GPUs takes 1/nproc of the images
        if result != STOPPED:
            self.cache.put(key, result)
        return result

    def needs_probe(self, cfg: ExperimentConfig, device: str | None = None, nproc: int = 1) -> bool:
        """Neither history nor the cache knows this run, and measuring is allowed."""
        key = self.key(cfg, device, nproc)
        return probe_enabled() and self.history_rate(key) is None and self.cache.get(key) is None

    def total(self, cfgs: Iterable[ExperimentConfig], device: str | None = None, nproc: int = 1) -> Estimate:
        """A plan's time run after run (never measures): the sum, unknown when any run is."""
        parts = [self.estimate(cfg, device, nproc) for cfg in cfgs]
        unknown = [p for p in parts if not p.known]
        kind = parts[0].device if parts else device_kind(device or "auto", self.gpus)
        if not parts or unknown:
            return Estimate(None, UNKNOWN, unknown[0].note if unknown else "nothing to run", kind)
        basis = HISTORY if all(p.basis == HISTORY for p in parts) else PROBE
        return Estimate(sum(p.seconds for p in parts), basis, f"{len(parts)} runs, one after another: "
                        f"{parts[0].note}", kind)

    def history_rate(self, key: SpeedKey) -> tuple[float, int] | None:
        """(seconds per train image, runs it comes from) of the newest matching runs, or None."""
        if key not in self._rates:
            self._rates[key] = self._read_history(key)
        return self._rates[key]

    def _read_history(self, key: SpeedKey) -> tuple[float, int] | None:
        conn = self.store.conn
        rows = conn.execute(
            "SELECT run_id, device, world_size, config_json FROM runs WHERE host = ? AND config_json IS NOT NULL "
            "AND json_extract(config_json, '$.model.backbone') = ? AND json_extract(config_json, '$.model.stem') = ? "
            "AND json_extract(config_json, '$.data.image_size') = ? AND epochs_done > 0 ORDER BY started_at DESC",
            (key.host, key.backbone, key.stem, key.image_size)).fetchall()
        rates = []
        for run_id, device, world_size, config_json in rows:
            try:
                config = json.loads(config_json)
            except ValueError:
                continue
            if device_kind(device or "cpu") != key.device or int(world_size or 1) != key.nproc:
                continue
            if tuple((config.get("data") or {}).get("train_sizes") or ()) != key.train_sizes \
                    or _extras(config) != key.extras:
                continue
            epochs = conn.execute("SELECT epoch_s, test_acc IS NOT NULL FROM epochs WHERE run_id = ? ORDER BY epoch",
                                  (run_id,)).fetchall()
            rate = _row_rate(config, [(s, bool(e)) for s, e in epochs])
            if rate is not None:
                rates.append(rate)
            if len(rates) >= HISTORY_RUNS:
                break
        return (statistics.median(rates), len(rates)) if rates else None


# ---------------------------------------------------------------------- the probe


def probe_enabled() -> bool:
    return os.environ.get(PROBE_ENV, "").strip().lower() not in ("off", "0", "no", "false")


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(os.environ.get("CIFAR_TUI_CACHE") or Path(base) / "cifar-tui")


class ProbeCache:
    """Measured seconds per train image (or why measuring failed), one JSON file per machine user."""

    def __init__(self, path: Path | None = None):
        self.path = Path(path) if path is not None else cache_dir() / "estimates.json"

    def _read(self) -> dict:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def get(self, key: SpeedKey) -> float | str | None:
        entry = self._read().get(key.cache_key())
        if isinstance(entry, dict):
            if isinstance(entry.get("train_s_per_image"), (int, float)) and entry["train_s_per_image"] > 0:
                return float(entry["train_s_per_image"])
            if isinstance(entry.get("error"), str) and time.time() - float(entry.get("t") or 0) < FAILED_PROBE_TTL_S:
                return entry["error"]
        return None

    def put(self, key: SpeedKey, value: float | str) -> None:
        data = self._read()
        entry = {"train_s_per_image": value} if isinstance(value, float) else {"error": value}
        data[key.cache_key()] = {**entry, "t": time.time()}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
            os.replace(tmp, self.path)
        except OSError:  # a read-only home: the next estimate measures again
            pass


class Probe:
    """The probe's child process (python -m cifar_tui.estimate_probe): a few training steps of the
    config on its device, niced. `result()` waits; `kill()` ends it (a form closed meanwhile)."""

    def __init__(self, cfg: ExperimentConfig, key: SpeedKey):
        self.key = key
        request = {"config": cfg.to_dict(), "device": key.device, "nproc": key.nproc}
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen([sys.executable, "-m", "cifar_tui.estimate_probe"], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                        start_new_session=True)
        self._request = json.dumps(request)

    def result(self, timeout: float = PROBE_TIMEOUT_S) -> float | str:
        """Seconds per train image, or why there is none (a short line)."""
        try:
            out, err = self.process.communicate(self._request, timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return f"took over {timeout:.0f} s"
        except (OSError, ValueError):  # killed meanwhile: its pipes are closed
            return STOPPED
        if self.process.returncode < 0:  # killed (a signal)
            return STOPPED
        if self.process.returncode != 0:
            lines = [line for line in (err or "").strip().splitlines() if line.strip()]
            return lines[-1][:200] if lines else f"exit code {self.process.returncode}"
        try:
            rate = float(json.loads(out.strip().splitlines()[-1])["train_s_per_image"])
        except (ValueError, KeyError, IndexError, TypeError):
            return "no result"
        return rate if rate > 0 else "no result"

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


# ---------------------------------------------------------------------- words


def fmt_span(seconds: float) -> str:
    """A duration as people round it: "40 s", "12 min", "3 h 20 min", "2 d 5 h"."""
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{max(1, round(seconds))} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes and hours < 10 else f"{hours} h"
    days, hours = divmod(round(seconds / 3600), 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def format_estimate(est: Estimate) -> str:
    if est.seconds is None:
        return f"unknown ({est.note})"
    return f"about {fmt_span(est.seconds)} on {est.device} ({est.note})"
