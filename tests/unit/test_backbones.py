"""The backbones beyond ResNet: wide ResNets (ours), ViT/DeiT with 4x4 patches and ConvNeXt with a
CIFAR stem (timm); each builds and runs at 32x32."""
from __future__ import annotations

import pytest
import timm
import torch

from engine.config import ConfigError, ModelConfig
from engine.models import WeightsError, build_model, count_params


def forward(model, size=32, n=2):
    model.train(False)
    with torch.no_grad():
        return model(torch.rand(n, 3, size, size))


def test_wrn_28_10_has_the_papers_size_and_runs_at_32():
    model = build_model(ModelConfig(backbone="wrn28_10", stem="cifar"))
    assert count_params(model) == 36_536_884  # 36.5 M with the 100-class layer, as the paper's code
    assert model.backbone.num_features == 640
    assert forward(model, n=1).shape == (1, 100)


def test_wrn_16_4_and_weights_from_a_file(tmp_path):
    model = build_model(ModelConfig(backbone="wrn16_4", stem="cifar"))
    assert 2.7e6 < count_params(model) < 2.8e6 and forward(model).shape == (2, 100)
    assert model.backbone.forward_features(torch.rand(1, 3, 32, 32)).shape == (1, 256, 8, 8)
    path = tmp_path / "wrn.pt"
    torch.save(model.backbone.state_dict(), path)
    again = build_model(ModelConfig(backbone="wrn16_4", stem="cifar", pretrained=True, weights=str(path)))
    assert torch.equal(again.backbone.conv1.weight, model.backbone.conv1.weight)


@pytest.mark.parametrize("name", ["vit_tiny_patch16_224", "deit_tiny_patch16_224"])
def test_vit_with_4x4_patches(name):
    model = build_model(ModelConfig(backbone=name, stem="cifar", drop_path_rate=0.1))
    embed = model.backbone.patch_embed
    assert embed.proj.kernel_size == (4, 4) and embed.num_patches == 64
    assert forward(model).shape == (2, 100)
    assert forward(model, size=48).shape == (2, 100)  # other sizes: the position embedding is interpolated


def test_pretrained_vit_weights_are_resampled_to_4x4_patches(tmp_path):
    """ImageNet ViT weights (16x16 patches, 14x14 positions) load into the CIFAR ViT offline."""
    torch.manual_seed(0)
    path = tmp_path / "vit.pth"
    torch.save(timm.create_model("vit_tiny_patch16_224").state_dict(), path)
    model = build_model(ModelConfig(backbone="vit_tiny_patch16_224", stem="cifar", pretrained=True, weights=str(path)))
    assert model.backbone.patch_embed.proj.weight.shape[-2:] == (4, 4)
    assert model.backbone.pos_embed.shape[1] == 1 + 64
    assert torch.isfinite(forward(model)).all()


def test_convnext_cifar_stem_keeps_resolution():
    model = build_model(ModelConfig(backbone="convnext_atto", stem="cifar"))
    conv = model.backbone.stem[0]
    assert conv.kernel_size == (3, 3) and conv.stride == (1, 1)
    assert model.backbone.forward_features(torch.rand(1, 3, 32, 32)).shape[-1] == 4  # 32 / 8
    assert forward(model).shape == (2, 100)
    imagenet = build_model(ModelConfig(backbone="convnext_atto"))
    assert imagenet.backbone.forward_features(torch.rand(1, 3, 32, 32)).shape[-1] == 1


def test_stem_and_weights_errors_name_the_key():
    with pytest.raises(ConfigError, match="model.stem: wrn28_10 is a CIFAR network"):
        build_model(ModelConfig(backbone="wrn28_10"))
    with pytest.raises(ConfigError, match="model.stem: cifar is available for .* not 'efficientnet_b0'"):
        build_model(ModelConfig(backbone="efficientnet_b0", stem="cifar"))
    with pytest.raises(WeightsError, match="model.pretrained: wrn16_4 has no published weights"):
        build_model(ModelConfig(backbone="wrn16_4", stem="cifar", pretrained=True))
    with pytest.raises(ConfigError, match="model.drop_path_rate: wrn16_4 has no stochastic depth"):
        build_model(ModelConfig(backbone="wrn16_4", stem="cifar", drop_path_rate=0.1))
