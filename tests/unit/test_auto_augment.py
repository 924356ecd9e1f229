"""RandAugment / TrivialAugmentWide batched on the device == torchvision.transforms.v2, image by image."""
from __future__ import annotations

import pytest
import torch
from torchvision.transforms.v2 import RandAugment, TrivialAugmentWide

from engine.data import auto_augment as aa

REFERENCE = {"randaugment": RandAugment, "trivialaugment": TrivialAugmentWide}


def _images(n: int, seed: int = 0) -> torch.Tensor:
    """Random uint8 images with the cases the ops treat specially: grey, constant, full range."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    x[0::7] = x[0::7, :1]                        # grey (Color/Contrast blend with themselves)
    x[1::11] = 77                                # constant (AutoContrast/Equalize leave them)
    x[2::13, :, :16] = 0
    x[2::13, :, 16:] = 255
    return x


def _reference(policy: str, image: torch.Tensor, ops: list[int], magnitudes: list[float]) -> torch.Tensor:
    t = REFERENCE[policy]()
    for op, m in zip(ops, magnitudes):
        image = t._apply_image_or_video_transform(image, aa.OP_NAMES[op], m, interpolation=t.interpolation,
                                                  fill=t._fill)
    return image


@pytest.mark.parametrize("policy", aa.POLICIES)
def test_every_op_bin_and_sign_matches_torchvision(policy):
    """One batch in which every image has its own (op, magnitude bin, sign): all of them at once."""
    table = aa.magnitude_table(policy, 31, 32, 32)
    signed = aa.signed_ops(policy)
    combos = [(op, table[op, b].item() * sign) for op in range(len(aa.OP_NAMES)) for b in range(31)
              for sign in ((1, -1) if signed[op] else (1,))]
    x = _images(len(combos))
    params = aa.AutoAugmentDraw(torch.tensor([[op for op, _ in combos]]),
                                torch.tensor([[m for _, m in combos]], dtype=torch.float64))
    out = aa.apply(x.clone(), params)
    for i, (op, m) in enumerate(combos):
        ref = _reference(policy, x[i], [op], [m])
        assert torch.equal(out[i], ref), f"{aa.OP_NAMES[op]} magnitude {m}: {(out[i] != ref).sum()} pixels differ"


@pytest.mark.parametrize("policy", aa.POLICIES)
def test_drawn_batch_matches_torchvision_op_after_op(policy):
    """What the pipeline does: draw per-image params, apply them to a channels_last uint8 batch
    (the layout the device gather returns); torchvision applies the same ops in the same order."""
    n = 300
    g = torch.Generator().manual_seed(3)
    params = aa.draw(g, n, policy)
    x = _images(n, seed=1)
    batch = x.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)  # NHWC memory, as the gather makes
    out = aa.apply(batch, params)
    for i in range(n):
        ref = _reference(policy, x[i], params.ops[:, i].tolist(), params.magnitudes[:, i].tolist())
        assert torch.equal(out[i], ref), f"image {i}: ops {params.ops[:, i].tolist()}"


def test_draw_follows_torchvisions_distribution():
    g = torch.Generator().manual_seed(0)
    n = 20000
    ra = aa.draw(g, n, "randaugment", num_ops=2, magnitude=9)
    assert ra.ops.shape == (2, n)
    freq = torch.bincount(ra.ops.flatten(), minlength=14).double() / (2 * n)
    assert torch.allclose(freq, torch.full((14,), 1 / 14, dtype=torch.float64), atol=0.01)
    table = aa.magnitude_table("randaugment", 31, 32, 32)
    shear = ra.ops == aa.OP_NAMES.index("ShearX")
    assert set(ra.magnitudes[shear].abs().tolist()) == {table[1, 9].item()}  # always bin 9
    assert abs((ra.magnitudes[shear] < 0).double().mean().item() - 0.5) < 0.03  # sign: 1/2
    solarize = ra.ops == aa.OP_NAMES.index("Solarize")
    assert (ra.magnitudes[solarize] > 0).all()  # unsigned ops keep their sign
    ta = aa.draw(g, n, "trivialaugment")
    assert ta.ops.shape == (1, n)  # one op per image
    rotate = ta.ops[0] == aa.OP_NAMES.index("Rotate")
    bins = (ta.magnitudes[0, rotate].abs() / 4.5).round().long()  # linspace(0, 135, 31): steps of 4.5
    assert torch.bincount(bins, minlength=31).min() > 0 and bins.max() == 30


def test_draw_is_a_function_of_the_generator_seed():
    a = aa.draw(torch.Generator().manual_seed(7), 64, "randaugment")
    b = aa.draw(torch.Generator().manual_seed(7), 64, "randaugment")
    c = aa.draw(torch.Generator().manual_seed(8), 64, "randaugment")
    assert torch.equal(a.ops, b.ops) and torch.equal(a.magnitudes, b.magnitudes)
    assert not torch.equal(a.ops, c.ops)
