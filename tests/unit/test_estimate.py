"""cifar_tui.estimate: a run's time from earlier runs of the same model and input size on this
machine's device (the real store), the probe's cache, the words."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from cifar_tui.estimate import (FAILED_PROBE_TTL_S, HISTORY, PROBE, UNKNOWN, Estimator, ProbeCache, fmt_span,
                                format_estimate, speed_key, surely_under, work)
from engine.config import load_config
from engine.record.status import this_host
from engine.record.store import Store

ROOT = Path(__file__).resolve().parent.parent.parent
CONFIGS = ROOT / "configs"


def cfg(*overrides: str, name: str = "resnet18_baseline"):
    return load_config(name, list(overrides), CONFIGS)


def add_run(store: Store, run_id: str, config, epoch_s: list[float], *, device: str = "cpu",
            host: str | None = None, world_size: int = 1, evaluated: bool = True) -> None:
    store.run_started(run_id, config=config.to_dict(), device=device, pid=1, run_dir=str(store.home / run_id),
                      epochs_total=len(epoch_s), params=None, flops=None, world_size=world_size)
    for n, s in enumerate(epoch_s, 1):
        store.epoch_done(run_id, {"epoch": n, "epoch_s": s, "test_acc": 10.0 if evaluated else None}, n * s)
    if host is not None:
        store.conn.execute("UPDATE runs SET host=? WHERE run_id=?", (host, run_id))


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "runs")
    yield s
    s.close()


@pytest.fixture
def cache(tmp_path):
    return tmp_path / "cache" / "estimates.json"


def test_history_of_the_same_model_and_size_here_gives_the_run_time(store, cache):
    # 2,000 train + 500 test images per epoch; 20 s per epoch after the first (warm-up: 60 s, left out)
    small = cfg("data.train_limit=2000", "data.test_limit=500", "train.epochs=3")
    add_run(store, "a-1", small, [60.0, 20.0, 20.0])
    per_image = 20.0 / (2000 + 500 / 3)
    # not counted: another host, another device, another input size, another backbone, a SAM run
    add_run(store, "b-1", small, [1.0, 1.0], host="elsewhere")
    add_run(store, "b-2", small, [1.0, 1.0], device="cuda:0")
    add_run(store, "b-3", cfg("data.train_limit=2000", "data.image_size=64"), [1.0, 1.0])
    add_run(store, "b-4", cfg("data.train_limit=2000", "model.backbone=resnet50"), [1.0, 1.0])
    add_run(store, "b-5", cfg("data.train_limit=2000", "optim.sam.rho=0.05"), [1.0, 1.0])

    target = cfg("train.epochs=200", "train.device=cpu")  # the full data: 50,000 + 10,000 images per epoch
    est = Estimator(store, gpus=[], cache=cache).estimate(target)
    assert est.basis == HISTORY and est.device == "cpu"
    assert est.seconds == pytest.approx(200 * (50000 + 10000 / 3) * per_image)
    assert "1 earlier run of resnet18 at 32x32 on cpu here" in est.note
    assert format_estimate(est).startswith(f"about {fmt_span(est.seconds)} on cpu")

    # the same config on a GPU: b-2 (cuda:0) is the one earlier run there
    gpu = Estimator(store, gpus=["0"], cache=cache).estimate(cfg("train.device=auto", "data.train_limit=2000"))
    assert gpu.basis == HISTORY and gpu.device == "cuda"


def test_the_newest_runs_count_and_their_median(store, cache):
    small = cfg("data.train_limit=1000", "data.test_limit=0", "train.epochs=2")
    for i, s in enumerate([10.0, 30.0, 20.0]):
        add_run(store, f"r-{i}", small, [s], evaluated=False)  # one epoch each: it counts as it is
    est = Estimator(store, gpus=[], cache=cache).estimate(cfg("train.epochs=1", "eval.every=5", "train.device=cpu"))
    # epochs=1: 1 evaluation (the last epoch) of 10,000 images; the median rate is 20 s / 1,000 images
    assert est.seconds == pytest.approx((50000 + 10000 / 3) * 20.0 / 1000)
    assert "3 earlier runs" in est.note


def test_nothing_known_is_unknown_and_says_why(store, cache, monkeypatch):
    monkeypatch.setenv("CIFAR_TUI_ESTIMATE_PROBE", "off")
    est = Estimator(store, gpus=[], cache=cache)
    e = est.estimate(cfg("train.device=cpu"), probe=True)  # probing is off: nothing is measured
    assert e.basis == UNKNOWN and e.seconds is None
    assert format_estimate(e) == "unknown (no earlier run of resnet18 at 32x32 on cpu here)"
    assert not est.needs_probe(cfg("train.device=cpu"))


def test_a_cached_probe_is_used_and_a_failed_one_expires(store, cache):
    target = cfg("train.device=cpu", "train.epochs=10")
    key = speed_key(target, "cpu")
    ProbeCache(cache).put(key, 0.004)
    e = Estimator(store, gpus=[], cache=cache).estimate(target)
    assert e.basis == PROBE and e.seconds == pytest.approx(10 * (50000 + 10000 / 3) * 0.004)
    assert "measured" in format_estimate(e)

    ProbeCache(cache).put(key, "RuntimeError: out of memory")
    e = Estimator(store, gpus=[], cache=cache).estimate(target)
    assert e.basis == UNKNOWN and "the probe failed: RuntimeError: out of memory" in e.note
    data = json.loads(cache.read_text())
    data[key.cache_key()]["t"] = time.time() - FAILED_PROBE_TTL_S - 1
    cache.write_text(json.dumps(data))
    assert ProbeCache(cache).get(key) is None  # tried again


def test_a_plan_total_is_the_sum_or_unknown(store, cache):
    small = cfg("data.train_limit=1000", "data.test_limit=100", "train.epochs=2")
    add_run(store, "r-1", small, [5.0, 5.0])
    est = Estimator(store, gpus=[], cache=cache)
    one = est.estimate(cfg("train.device=cpu", "train.epochs=2"))
    total = est.total([cfg("train.device=cpu", "train.epochs=2")] * 3)
    assert total.basis == HISTORY and total.seconds == pytest.approx(3 * one.seconds)
    mixed = est.total([cfg("train.device=cpu"), cfg("train.device=cpu", "model.backbone=resnet50")])
    assert mixed.seconds is None and "resnet50" in mixed.note


def test_words_and_bounds():
    assert [fmt_span(s) for s in (0.2, 42, 90, 3599, 3600, 5 * 3600 + 20 * 60, 30 * 3600, 50 * 3600)] == \
        ["1 s", "42 s", "2 min", "1 h", "1 h", "5 h 20 min", "30 h", "2 d 2 h"]
    assert work(cfg("train.epochs=3", "eval.every=2")) == (150000, 20000)  # evaluated after epochs 2 and 3
    assert surely_under(cfg("data.train_limit=256", "data.test_limit=128", "train.epochs=1"), 3600)
    assert not surely_under(cfg(), 3600)
    assert not surely_under(cfg("data.train_limit=256", "data.image_size=224", "train.epochs=3"), 3600)
    small = ["data.train_limit=3000", "data.test_limit=100", "train.epochs=1"]
    assert surely_under(cfg(*small), 3600) and not surely_under(cfg(*small, "optim.sam.rho=0.05"), 3600)
    assert speed_key(cfg(), "cpu").host == this_host()
