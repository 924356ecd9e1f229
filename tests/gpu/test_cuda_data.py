"""The device pipeline and the batched augmentations on CUDA give the batches the CPU gives: the
same crops, flips and labels exactly (integer gathers), the same pixels within a rounding step
where float kernels differ (resize, RandAugment's geometry, MixUp/CutMix), and the pipeline's
batches really live on the GPU (pinned, non-blocking transfers)."""
from __future__ import annotations

import pytest
import torch

from engine import data as D
from engine.config import DataConfig

from tests.gpu.conftest import DEVICE

pytestmark = pytest.mark.gpu

ONE_STEP = 1.0 / 255  # one uint8 level, in [0, 1] pixels (normalize: none)


@pytest.fixture(scope="module")
def small() -> D.Dataset:
    return D.synthetic_dataset(0, 128, 32)


def batches(ds, device, steps: int = 3, **cfg) -> list[tuple[torch.Tensor, torch.Tensor]]:
    pipe = D.DevicePipeline(ds, DataConfig(source="synthetic", normalize="none", **cfg), torch.device(device))
    out = []
    for step, (x, y) in enumerate(pipe.train_batches(1, 7, 32)):
        if step == steps:
            break
        if isinstance(x, tuple):  # multi-scale: one tensor per size group
            assert all(part.device.type == torch.device(device).type for part in x)
            out.append((torch.cat([part.flatten(1).cpu() for part in x], 1) if len(x) == 1 else
                        torch.cat([part.cpu().flatten() for part in x]), y.cpu()))
        else:
            assert x.device.type == torch.device(device).type and y.device.type == x.device.type
            out.append((x.float().cpu().clone(), y.cpu().clone()))
    return out


def assert_close_pixels(gpu, cpu, *, exact: bool) -> None:
    assert len(gpu) == len(cpu)
    for (xg, yg), (xc, yc) in zip(gpu, cpu):
        assert torch.equal(yg, yc) if not yg.is_floating_point() else torch.allclose(yg, yc, atol=1e-5)
        if exact:
            assert torch.equal(xg, xc)
        else:
            diff = (xg - xc).abs()
            assert diff.max() <= 2 * ONE_STEP + 1e-6, float(diff.max())
            assert (diff > 1e-6).float().mean() < 0.01, float((diff > 1e-6).float().mean())  # rare rounding ties


@pytest.mark.parametrize("augment", ["none", "flip", "crop_flip"])
def test_crops_flips_and_labels_on_the_gpu_are_the_cpus_exactly(small, augment):
    assert_close_pixels(batches(small, DEVICE, augment=augment), batches(small, "cpu", augment=augment), exact=True)


def test_resize_and_normalisation_on_the_gpu_match_the_cpu(small):
    for cfg in ({"augment": "crop_flip", "image_size": 64}, {"augment": "crop_flip", "train_sizes": [32, 48]}):
        assert_close_pixels(batches(small, DEVICE, **cfg), batches(small, "cpu", **cfg), exact=False)
    cpu = D.DevicePipeline(small, DataConfig(source="synthetic", normalize="cifar100"), torch.device("cpu"))
    gpu = D.DevicePipeline(small, DataConfig(source="synthetic", normalize="cifar100"), DEVICE)
    (xc, yc), (xg, yg) = next(iter(cpu.test_batches(32))), next(iter(gpu.test_batches(32)))
    assert torch.equal(yc, yg.cpu()) and torch.allclose(xc, xg.float().cpu(), atol=1e-5)


@pytest.mark.parametrize("on", [
    {"auto_augment": {"policy": "randaugment"}},
    {"auto_augment": {"policy": "trivialaugment"}},
    {"erasing": {"p": 0.5, "mode": "const"}},  # pixel/rand fill noise comes from the device's own generator
    {"mixup": {"mixup_alpha": 0.8, "cutmix_alpha": 1.0}},
    {"auto_augment": {"policy": "randaugment"}, "erasing": {"p": 0.5, "mode": "const"},
     "mixup": {"mixup_alpha": 0.8, "cutmix_alpha": 1.0}},
], ids=["randaugment", "trivialaugment", "erasing", "mixup_cutmix", "all"])
def test_batched_augmentations_on_the_gpu_give_the_cpus_pixels(small, on):
    gpu, cpu = batches(small, DEVICE, augment="crop_flip", **on), batches(small, "cpu", augment="crop_flip", **on)
    assert_close_pixels(gpu, cpu, exact=False)
    plain = batches(small, "cpu", augment="crop_flip")
    assert any(not torch.equal(a[0], b[0]) for a, b in zip(cpu, plain))  # the augmentation did something


def test_erasing_noise_on_the_gpu_erases_the_same_boxes(small):
    """pixel-mode noise is drawn on the device (CUDA's generator is not the CPU's): the boxes and
    everything outside them are the same; inside, the GPU's values are noise of the same spread."""
    cfg = {"augment": "crop_flip", "erasing": {"p": 1.0, "mode": "pixel"}}
    gpu, cpu = batches(small, DEVICE, **cfg), batches(small, "cpu", **cfg)
    const = batches(small, "cpu", augment="crop_flip", erasing={"p": 1.0, "mode": "const"})
    plain = batches(small, "cpu", augment="crop_flip")
    for (xg, _), (xc, _), (xk, _), (xp, _) in zip(gpu, cpu, const, plain):
        erased = (xk != xp)  # where the const eraser wrote: the boxes
        assert erased.any()
        assert torch.allclose(xg[~erased], xc[~erased], atol=1e-6)
        assert abs(float(xg[erased].std()) - float(xc[erased].std())) < 0.25 * float(xc[erased].std())


def test_the_pipelines_batches_stay_on_the_gpu_and_the_dataset_is_copied_once(small):
    pipe = D.DevicePipeline(small, DataConfig(source="synthetic", augment="crop_flip"), DEVICE)
    assert pipe._train_x.is_cuda and pipe._train_y.is_cuda and pipe._test_x.is_cuda
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    for x, y in pipe.train_batches(0, 0, 32):
        assert x.is_cuda and y.is_cuda and x.is_contiguous(memory_format=torch.channels_last)
        del x, y
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() - before < pipe._train_x.numel()  # no second copy of the dataset
