"""Every config builds its model; stems, heads and pretrained weights (offline, from a local file)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import timm
import torch

from engine.config import ConfigError, ModelConfig, list_config_paths, load_config
from engine.models import WeightsError, build_model

from tests.conftest import CONFIGS


@pytest.fixture(scope="module")
def weights_files(tmp_path_factory):
    """Weights files saved from freshly made timm models stand in for the hub's ImageNet weights."""
    d = tmp_path_factory.mktemp("weights")
    files = {}
    for name in ("resnet18", "resnet50"):
        torch.manual_seed(1)
        model = timm.create_model(name, pretrained=False)
        files[name] = d / f"{name}.pth"
        torch.save(model.state_dict(), files[name])
    return files


@pytest.mark.parametrize("path", list_config_paths(CONFIGS), ids=lambda p: p.stem)
def test_every_config_builds_its_model_and_runs_a_forward_pass(path, weights_files):
    cfg = load_config(str(path))
    overrides = [f"model.weights={weights_files[cfg.model.backbone]}"] if cfg.model.pretrained else []
    cfg = load_config(str(path), overrides)
    model = build_model(cfg.model).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, cfg.data.image_size, cfg.data.image_size))
    assert out.shape == (2, 100)
    if cfg.model.head == "margin":
        assert out.abs().max() <= 1.0 + 1e-5  # cosine logits


def test_pretrained_weights_are_loaded_from_a_local_file(weights_files):
    model = build_model(ModelConfig(backbone="resnet18", pretrained=True, weights=str(weights_files["resnet18"])))
    reference = torch.load(weights_files["resnet18"], weights_only=True)
    assert torch.equal(model.backbone.conv1.weight, reference["conv1.weight"])


def test_cifar_stem_keeps_resolution():
    model = build_model(ModelConfig(backbone="resnet18", stem="cifar"))
    assert model.backbone.conv1.stride == (1, 1) and model.backbone.conv1.kernel_size == (3, 3)
    assert isinstance(model.backbone.maxpool, torch.nn.Identity)
    feats = model.backbone.forward_features(torch.rand(1, 3, 32, 32))
    assert feats.shape[-1] == 4  # 32 / 8, against 1 with the ImageNet stem


def test_unknown_backbone_is_a_config_error():
    with pytest.raises(ConfigError, match="model.backbone: unknown timm model 'resnet19'"):
        build_model(ModelConfig(backbone="resnet19"))


def test_missing_weights_file_is_a_weights_error(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        build_model(ModelConfig(pretrained=True, weights=str(tmp_path / "none.pth")))


def test_offline_pretrained_without_cache_fails_fast(monkeypatch, tmp_path):
    """No cached weights and no network: one probe, refused at once, and a clear error; the hub
    client (which retries for a minute or more) is never called. Counted, not timed."""
    monkeypatch.delenv("HF_HUB_OFFLINE")  # the unreachable path (the suite's offline switch: test_suite_offline)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    import socket

    import huggingface_hub
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setattr("engine.models.HUB_HOST", ("127.0.0.1", 9))  # nothing listens: no network
    probes: list[str] = []

    def probe(address, timeout=None, *args, **kwargs):
        try:
            return socket.create_connection(address, timeout, *args, **kwargs)
        except OSError as exc:
            probes.append(type(exc).__name__)
            raise

    def no_hub(*args, **kwargs):
        raise AssertionError("the hub client was asked for the weights")

    monkeypatch.setattr("engine.models.socket", SimpleNamespace(create_connection=probe))
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_hub)
    monkeypatch.setattr(huggingface_hub.file_download, "hf_hub_download", no_hub)
    with pytest.raises(WeightsError) as info:
        build_model(ModelConfig(backbone="resnet18", pretrained=True))
    assert probes == ["ConnectionRefusedError"]  # one probe, answered at once: no timeout waited for
    message = str(info.value)
    assert "resnet18" in message and "model.weights" in message and "network" in message and "unreachable" in message
