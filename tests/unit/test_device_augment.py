"""Batched augmentations inside the DevicePipeline: the same batches for the same (seed, epoch, step),
resume from a step, DDP shards, soft targets; and their config fields."""
from __future__ import annotations

import pytest
import torch

from engine import data as D
from engine.config import ConfigError, DataConfig, load_config
from engine.data import auto_augment as aa
from engine.data.device_augment import DeviceAugment

ALL_ON = {"auto_augment": {"policy": "randaugment"}, "erasing": {"p": 0.5, "mode": "pixel"},
          "mixup": {"mixup_alpha": 0.8, "cutmix_alpha": 1.0}}


@pytest.fixture(scope="module")
def small() -> D.Dataset:
    return D.synthetic_dataset(0, 96, 16)


def pipe(ds, rank=0, world_size=1, **kw) -> D.DevicePipeline:
    cfg = DataConfig(source="synthetic", augment="crop_flip", normalize="cifar100", **kw)
    return D.DevicePipeline(ds, cfg, torch.device("cpu"), rank=rank, world_size=world_size)


def clone_all(it):
    return [(x.clone(), y.clone()) for x, y in it]


def test_off_by_default(small):
    assert pipe(small).batch_augment is None
    assert DeviceAugment.from_config(DataConfig(), 100, torch.device("cpu")) is None


def test_batches_are_a_function_of_seed_epoch_and_step(small):
    p = pipe(small, **ALL_ON)
    first = clone_all(p.train_batches(1, 5, 32))
    again = clone_all(pipe(small, **ALL_ON).train_batches(1, 5, 32))
    for (x1, y1), (x2, y2) in zip(first, again):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    other_seed = clone_all(p.train_batches(1, 6, 32))
    assert not torch.equal(first[0][0], other_seed[0][0])
    # resuming at step 2 gives the uninterrupted run's batches from step 2 on
    resumed = clone_all(p.train_batches(1, 5, 32, start_step=2))
    assert len(resumed) == 1 and torch.equal(resumed[0][0], first[2][0]) and torch.equal(resumed[0][1], first[2][1])


def test_mixup_gives_soft_targets_and_others_keep_labels(small):
    p = pipe(small, **ALL_ON)
    assert p.batch_augment.soft_targets
    x, y = next(p.train_batches(0, 0, 32))
    assert x.shape == (32, 3, 32, 32) and x.is_contiguous(memory_format=torch.channels_last)
    assert y.shape == (32, 100) and y.dtype == torch.float32
    assert torch.allclose(y.sum(1), torch.ones(32))
    plain = clone_all(pipe(small).train_batches(0, 0, 32))[0][1]
    assert (y.argmax(1) == plain).float().mean() > 0.4  # an image mostly keeps its own label
    no_mix = pipe(small, auto_augment={"policy": "trivialaugment"}, erasing={"p": 0.3})
    x2, y2 = next(no_mix.train_batches(0, 0, 32))
    assert torch.equal(y2, plain) and not no_mix.batch_augment.soft_targets


def test_auto_augment_in_the_pipeline_is_torchvisions_on_the_crop(small):
    """The uint8 stage sits between crop/flip and the float conversion: with normalize none at
    32x32 the batch is exactly the crop, RandAugment-ed by torchvision, divided by 255."""
    cfg = DataConfig(source="synthetic", augment="crop_flip", normalize="none", auto_augment={"policy": "randaugment"})
    p = D.DevicePipeline(small, cfg, torch.device("cpu"))
    x, _ = next(p.train_batches(2, 3, 16))
    plain = D.DevicePipeline(small, cfg.model_copy(update={"auto_augment": DataConfig().auto_augment}), "cpu")
    crop, _ = next(plain.train_batches(2, 3, 16))
    crop = (crop * 255).round().to(torch.uint8)
    params = p.batch_augment.draw(3, 2, 0, 16).auto
    from torchvision.transforms.v2 import RandAugment

    t = RandAugment()
    for i in range(16):
        ref = crop[i]
        for op, m in zip(params.ops[:, i].tolist(), params.magnitudes[:, i].tolist()):
            ref = t._apply_image_or_video_transform(ref, aa.OP_NAMES[op], m, interpolation=t.interpolation, fill=t._fill)
        assert torch.equal(x[i], ref.float() / 255)


@pytest.mark.parametrize("world_size", [2, 3])
def test_ddp_shards_of_per_image_augmentations_equal_one_process(small, world_size):
    """Per-image draws are made for the global batch and sliced per rank, like crops and flips."""
    on = {"auto_augment": {"policy": "trivialaugment"}, "erasing": {"p": 0.5, "mode": "const"}}
    single = clone_all(pipe(small, **on).train_batches(0, 1, 30))
    ranks = [clone_all(pipe(small, rank=r, world_size=world_size, **on).train_batches(0, 1, 30))
             for r in range(world_size)]
    for step, (x, y) in enumerate(single):
        for r in range(world_size):
            xr, yr = ranks[r][step]
            assert torch.equal(xr, x[r::world_size]) and torch.equal(yr, y[r::world_size])


def test_config_refuses_what_the_device_pipeline_cannot_do():
    with pytest.raises(ConfigError, match="data.mixup: runs in the device pipeline, not with augment: albumentations"):
        load_config("resnet18_augment", ["data.mixup.cutmix_alpha=1.0"])
    with pytest.raises(ConfigError, match="data.mixup: needs one class per image, not loss.margin: arcface"):
        load_config("resnet18_pretrained_arcface", ["data.mixup.mixup_alpha=0.2"])
    with pytest.raises(ConfigError, match=r"data.auto_augment.policy: Input should be 'none', 'randaugment' or "):
        load_config("resnet18_baseline", ["data.auto_augment.policy=autoaugment"])
    with pytest.raises(ConfigError, match=r"data.erasing.p: Input should be less than or equal to 1"):
        load_config("resnet18_baseline", ["data.erasing.p=1.5"])
    with pytest.raises(ConfigError, match=r"data.mixup.cut_mix: unknown key"):
        load_config("resnet18_baseline", ["data.mixup.cut_mix=1"])
