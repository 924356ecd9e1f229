"""MixUp/CutMix and Random Erasing, batched, against timm's Mixup and RandomErasing replayed with
the same random draws (timm's numpy/random calls answered from the same torch generator)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import timm.data.mixup as timm_mixup
import timm.data.random_erasing as timm_erasing
import torch
import torch.nn.functional as F

from engine.data import erasing, mixing


class _NumpyFromTorch:
    """Stands in for np.random inside timm.data.mixup: rand/beta come from a torch generator in
    the order timm asks for them (the order mixing.draw uses); randint answers the box centres
    from the draw under test, as np.random.randint(0, H) would."""

    def __init__(self, seed: int, params: mixing.MixDraw):
        self.g = torch.Generator().manual_seed(seed)
        keep = params.cutmix
        self.centres = [v for pair in zip(params.cy[keep].tolist(), params.cx[keep].tolist()) for v in pair]

    def rand(self, size=None):
        v = torch.rand(size or 1, generator=self.g, dtype=torch.float64).numpy()
        return v if size else float(v[0])

    def beta(self, a, b, size=None):
        assert a == b
        v = mixing._beta(self.g, a, size or 1).numpy()
        return v if size else float(v[0])

    def randint(self, low, high, size=None):
        assert low == 0 and size is None
        return int(self.centres.pop(0) * high)


@pytest.mark.parametrize("mode", ["elem", "batch"])
@pytest.mark.parametrize("alphas", [(0.8, 1.0), (1.0, 0.0), (0.0, 1.0)], ids=["both", "mixup", "cutmix"])
@pytest.mark.parametrize("prob", [1.0, 0.6])
def test_mix_matches_timm_mixup(monkeypatch, mode, alphas, prob):
    mixup_alpha, cutmix_alpha = alphas
    n, classes, smoothing = 48, 10, 0.1
    for seed in range(4 if mode == "batch" else 1):  # batch mode: a few draws (mixup and cutmix)
        g = torch.Generator().manual_seed(seed)
        params = mixing.draw(g, n, mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha, prob=prob, mode=mode)
        x = torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(99))
        labels = torch.randint(0, classes, (n,), generator=torch.Generator().manual_seed(98))

        monkeypatch.setattr(timm_mixup.np, "random", _NumpyFromTorch(seed, params))
        reference = timm_mixup.Mixup(mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha, prob=prob, mode=mode,
                                     label_smoothing=smoothing, num_classes=classes)
        ref_x, ref_y = reference(x.clone(), labels.clone())
        monkeypatch.undo()

        out_x, lam = mixing.mix(x.clone(), params)
        out_y = mixing.mixed_targets(labels, lam, classes)
        assert torch.allclose(out_x, ref_x, atol=1e-6), f"seed {seed}: images differ"
        # label smoothing is the loss's job: cross-entropy with label_smoothing on our targets is timm's target
        logits = torch.randn(n, classes, generator=torch.Generator().manual_seed(97))
        ours = F.cross_entropy(logits, out_y, label_smoothing=smoothing)
        timms = torch.sum(-ref_y * F.log_softmax(logits, dim=-1), dim=-1).mean()  # timm's SoftTargetCrossEntropy
        assert torch.allclose(ours, timms, atol=1e-6)
        assert torch.allclose(out_y * (1 - smoothing) + smoothing / classes, ref_y, atol=1e-6)


def test_elem_mode_mixes_each_image_with_its_own_parameters():
    g = torch.Generator().manual_seed(0)
    params = mixing.draw(g, 64, mixup_alpha=1.0, cutmix_alpha=1.0, mode="elem")
    assert params.lam.unique().numel() > 32 and 10 < int(params.cutmix.sum()) < 54
    batch = mixing.draw(torch.Generator().manual_seed(0), 64, mixup_alpha=1.0, cutmix_alpha=1.0, mode="batch")
    assert batch.lam.unique().numel() == 1


def test_cutmix_lambda_is_the_area_left_and_targets_sum_to_one():
    params = mixing.draw(torch.Generator().manual_seed(1), 32, mixup_alpha=0.0, cutmix_alpha=1.0)
    x = torch.arange(32, dtype=torch.float32).view(32, 1, 1, 1).expand(32, 3, 16, 16).contiguous()
    out, lam = mixing.mix(x, params)
    own = (out == x).all(dim=1).float().mean(dim=(1, 2))  # each image's share of its own pixels
    assert torch.allclose(own, lam)
    targets = mixing.mixed_targets(torch.arange(32), lam, 32)
    assert torch.allclose(targets.sum(1), torch.ones(32))
    assert torch.allclose(targets[torch.arange(32), torch.arange(32)], lam)


# ---------------------------------------------------------------------------------------
# Random Erasing


class _RandomFromDraw:
    """Stands in for `random` inside timm.data.random_erasing, answering from an EraseDraw:
    random() (erase or not) starts an image; uniform() alternates area and aspect per attempt;
    randint() gives the top, then the left."""

    def __init__(self, params: erasing.EraseDraw):
        self.p, self.i = params, -1

    def random(self):
        self.i += 1
        self.uniforms = self.randints = 0
        return float(self.p.apply[self.i])

    def uniform(self, a, b):
        drawn = self.p.area if self.uniforms % 2 == 0 else self.p.aspect
        u = float(drawn[self.i, self.uniforms // 2])
        self.uniforms += 1
        return a + (b - a) * u

    def randint(self, a, b):
        u = float((self.p.top if self.randints == 0 else self.p.left)[self.i])
        self.randints += 1
        return a + int(u * (b - a + 1))


@pytest.mark.parametrize("mode", erasing.MODES)
@pytest.mark.parametrize("areas", [(0.02, 1 / 3), (0.3, 0.9)])  # the second makes attempts fail
def test_erasing_matches_timm_random_erasing(monkeypatch, mode, areas):
    n, h, w = 64, 32, 24
    params = erasing.draw(torch.Generator().manual_seed(5), n)
    x = torch.randn(n, 3, h, w, generator=torch.Generator().manual_seed(6))
    box = erasing.boxes(params, h, w, p=0.5, min_area=areas[0], max_area=areas[1], min_aspect=0.3)
    out = erasing.erase(x.clone(), box, mode, torch.Generator().manual_seed(7))
    erased = (box[:, 2] > 0).nonzero().flatten()  # the noise is drawn for these only, in batch order
    drawn = erasing.fill_values(x[erased], mode, torch.Generator().manual_seed(7))
    values = torch.zeros(n, 3, h, w)
    values[erased] = drawn.expand(len(erased), 3, h, w) if mode != "const" else 0.0

    fake = _RandomFromDraw(params)

    def pixels(per_pixel, rand_color, patch_size, dtype, device):  # timm's fill, from the same noise
        top, left, bh, bw = box[fake.i].tolist()
        assert (bh, bw) == tuple(patch_size[1:]), "timm placed a box of another size"
        if per_pixel:
            return values[fake.i, :, top:top + bh, left:left + bw]
        return values[fake.i, :, :1, :1] if rand_color else torch.zeros(patch_size[0], 1, 1)

    monkeypatch.setattr(timm_erasing, "random", fake)
    monkeypatch.setattr(timm_erasing, "_get_pixels", pixels)
    reference = timm_erasing.RandomErasing(probability=0.5, min_area=areas[0], max_area=areas[1], min_aspect=0.3,
                                           mode=mode, device="cpu")(x.clone())
    monkeypatch.undo()
    assert torch.equal(out, reference)
    assert 0 < (box[:, 2] > 0).sum().item() < n


def test_erased_boxes_have_the_configured_area_and_aspect():
    n, h, w = 4000, 32, 32
    params = erasing.draw(torch.Generator().manual_seed(0), n)
    box = erasing.boxes(params, h, w, p=1.0, min_area=0.1, max_area=0.2, min_aspect=0.5, max_aspect=2.0)
    bh, bw = box[:, 2].double(), box[:, 3].double()
    assert (bh > 0).all()
    area = bh * bw / (h * w)
    assert area.min() > 0.07 and area.max() < 0.24  # rounding of the sides moves the area a little
    aspect = bh / bw
    assert aspect.min() >= 0.5 * 0.75 and aspect.max() <= 2.0 / 0.75
    assert (box[:, 0] + bh <= h).all() and (box[:, 1] + bw <= w).all()
    assert abs(math.log(aspect.median().item())) < 0.1


def test_erasing_probability():
    params = erasing.draw(torch.Generator().manual_seed(0), 10000)
    box = erasing.boxes(params, 32, 32, p=0.25)
    assert abs((box[:, 2] > 0).double().mean().item() - 0.25) < 0.02


def test_numpy_is_restored_after_the_timm_replays():
    assert timm_mixup.np.random is np.random
