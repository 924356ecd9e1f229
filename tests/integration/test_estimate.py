"""The estimate's probe for real: a child process trains a few steps of the config (test_resnet on
the CPU), its rate is cached per machine, and the next estimate reads the cache without measuring."""
from __future__ import annotations

import pytest

from cifar_tui.estimate import PROBE, Estimator, ProbeCache, speed_key
from engine.config import load_config
from engine.store import Store


@pytest.mark.timeout(120)
def test_the_probe_measures_once_and_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("CIFAR_TUI_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    cfg = load_config("resnet18_baseline", ["model.backbone=test_resnet", "train.device=cpu", "train.epochs=30"])
    store = Store(tmp_path / "runs")
    try:
        est = Estimator(store, gpus=[])
        assert est.needs_probe(cfg)
        first = est.estimate(cfg, probe=True)
        assert first.basis == PROBE and first.seconds > 0, first.note
        cached = ProbeCache().get(speed_key(cfg, "cpu"))
        assert cached == pytest.approx(first.train_s_per_image)
        # the same key is read back without measuring (probe=False); another input size is another key
        again = Estimator(store, gpus=[]).estimate(cfg, probe=False)
        assert again.basis == PROBE and again.seconds == pytest.approx(first.seconds)
        assert not Estimator(store, gpus=[]).needs_probe(cfg)
        bigger = load_config("resnet18_baseline", ["model.backbone=test_resnet", "train.device=cpu",
                                                   "data.image_size=64"])
        assert Estimator(store, gpus=[]).needs_probe(bigger)
    finally:
        store.close()
