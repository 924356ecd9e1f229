"""RandAugment and TrivialAugmentWide on uint8 batches, on the training device.

The op space, the magnitudes and each op's arithmetic are torchvision.transforms.v2's
(``RandAugment``, ``TrivialAugmentWide``, nearest interpolation, fill 0); what differs is
that every image of a batch draws its own ops, magnitudes and signs, and the batch is
transformed with one kernel chain per op, on the images that drew it (index_select, op,
index_copy_), never image by image.  The geometric ops (shear, translate, rotate) share
one grid_sample with a matrix per image.  Parameters are drawn on the CPU from a
``torch.Generator`` (see :func:`draw`), so a batch's augmentation is a function of that
generator's seed alone.

tests/unit/test_auto_augment.py checks every op, every magnitude bin and both signs
against torchvision.transforms.v2 applied to the same image with the same parameters.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.transforms.v2 import RandAugment, TrivialAugmentWide
from torchvision.transforms.v2 import functional as TF

# torchvision's own tables (op name -> (magnitudes(num_bins, h, w), signed)); the order of
# the keys is the order an op index refers to.
SPACES = {"randaugment": RandAugment._AUGMENTATION_SPACE, "trivialaugment": TrivialAugmentWide._AUGMENTATION_SPACE}
OP_NAMES: tuple[str, ...] = tuple(RandAugment._AUGMENTATION_SPACE)
assert OP_NAMES == tuple(TrivialAugmentWide._AUGMENTATION_SPACE), "torchvision's two op spaces differ in order"
GEOMETRIC = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")
POLICIES = tuple(SPACES)


@dataclass(frozen=True)
class AutoAugmentDraw:
    """What each image of a batch does: ``ops`` (slots, n) op indices into OP_NAMES and
    ``magnitudes`` (slots, n) float64 signed magnitudes, as torchvision would pass them to
    ``_apply_image_or_video_transform``."""

    ops: Tensor
    magnitudes: Tensor

    def take(self, index: slice | Tensor) -> "AutoAugmentDraw":
        return AutoAugmentDraw(self.ops[:, index], self.magnitudes[:, index])


def magnitude_table(policy: str, num_bins: int, height: int, width: int) -> Tensor:
    """(ops, bins) float64 magnitudes of torchvision's space; 0 for ops without one."""
    rows = []
    for name in OP_NAMES:
        fn, _ = SPACES[policy][name]
        values = fn(num_bins, height, width)
        rows.append(torch.zeros(num_bins, dtype=torch.float64) if values is None else values.double())
    return torch.stack(rows)


def signed_ops(policy: str) -> Tensor:
    return torch.tensor([SPACES[policy][name][1] for name in OP_NAMES])


def draw(g: torch.Generator, n: int, policy: str, *, num_ops: int = 2, magnitude: int = 9,
         num_magnitude_bins: int = 31, height: int = 32, width: int = 32) -> AutoAugmentDraw:
    """Per-image ops and magnitudes for n images, with torchvision's distribution:
    RandAugment: ``num_ops`` ops each uniform over the space, at bin ``magnitude``;
    TrivialAugmentWide: one op, its bin uniform; either way a signed op's magnitude is
    negated with probability 1/2."""
    if policy not in SPACES:
        raise ValueError(f"unknown auto-augment policy {policy!r} (expected one of {', '.join(POLICIES)})")
    slots = num_ops if policy == "randaugment" else 1
    table = magnitude_table(policy, num_magnitude_bins, height, width)
    ops = torch.randint(len(OP_NAMES), (slots, n), generator=g)
    if policy == "randaugment":
        bins = torch.full((slots, n), magnitude, dtype=torch.int64)
    else:
        bins = torch.randint(num_magnitude_bins, (slots, n), generator=g)
    negate = (torch.rand((slots, n), generator=g) <= 0.5) & signed_ops(policy)[ops]
    magnitudes = table[ops, bins]
    return AutoAugmentDraw(ops, torch.where(negate, -magnitudes, magnitudes))


# ---------------------------------------------------------------------------------------
# The ops. Each takes uint8 (k, C, H, W) and per-image float64 magnitudes (k,) on the CPU
# (plain numbers the host already has), and mirrors torchvision's kernel for one image.


def _per_image(values: Tensor, device: torch.device, dtype: torch.dtype = torch.float32) -> Tensor:
    return values.to(dtype).view(-1, 1, 1, 1).to(device, non_blocking=True)


def _fma(t: Tensor, other: Tensor, alpha: Tensor) -> Tensor:
    """t + alpha * other rounded once to float32, as torchvision's ``add_(other, alpha=a)``
    computes it (a fused multiply-add on CPU and CUDA)."""
    return torch.addcmul(t.double(), other.double(), alpha.double()).float()


def _blend(image: Tensor, other: Tensor, ratio: Tensor) -> Tensor:
    """torchvision's _blend with a float64 ratio per image: image * r + other * (1 - r), clamped,
    truncated (r and 1 - r are worked out in float64, then rounded to float32, as there)."""
    r, alpha = _per_image(ratio, image.device), _per_image(1.0 - ratio, image.device)
    return _fma(image.float() * r, other, alpha).clamp_(0, 255).to(torch.uint8)


def _gray(image: Tensor) -> Tensor:
    r, g, b = image.unbind(dim=-3)
    return r.mul(0.2989).add_(g, alpha=0.587).add_(b, alpha=0.114).unsqueeze(-3).floor_()


def brightness(image: Tensor, magnitude: Tensor) -> Tensor:
    factor = _per_image(1.0 + magnitude, image.device)
    return image.float().mul_(factor).clamp_(0, 255).to(torch.uint8)


def color(image: Tensor, magnitude: Tensor) -> Tensor:
    return _blend(image, _gray(image), 1.0 + magnitude)


def contrast(image: Tensor, magnitude: Tensor) -> Tensor:
    return _blend(image, _gray(image).mean(dim=(-3, -2, -1), keepdim=True), 1.0 + magnitude)


def sharpness(image: Tensor, magnitude: Tensor) -> Tensor:
    c = image.shape[-3]
    a, b = 1.0 / 13.0, 5.0 / 13.0
    kernel = torch.tensor([[a, a, a], [a, b, a], [a, a, a]], dtype=torch.float32, device=image.device)
    out = image.float()
    blurred = F.conv2d(out, kernel.expand(c, 1, 3, 3), groups=c).round_()
    inner = out[..., 1:-1, 1:-1]
    alpha = _per_image(1.0 - (1.0 + magnitude), image.device)  # 1 - factor, in float64 as there
    inner.copy_(_fma(inner, blurred.sub_(inner), alpha))
    return out.clamp_(0, 255).to(torch.uint8)


def posterize(image: Tensor, magnitude: Tensor) -> Tensor:
    bits = magnitude.to(torch.int64).clamp(0, 8)
    mask = ((1 << bits) - 1) << (8 - bits)
    return image & mask.to(torch.uint8).view(-1, 1, 1, 1).to(image.device, non_blocking=True)


def solarize(image: Tensor, magnitude: Tensor) -> Tensor:
    threshold = _per_image(255.0 * magnitude, image.device)
    return torch.where(image >= threshold, 255 - image, image)


def autocontrast(image: Tensor, magnitude: Tensor) -> Tensor:  # noqa: ARG001 - no magnitude
    return TF.autocontrast(image)


def equalize(image: Tensor, magnitude: Tensor) -> Tensor:  # noqa: ARG001 - no magnitude
    return TF.equalize(image)


def _inverse_affine(center: tuple[Tensor, Tensor], angle: Tensor, translate: tuple[Tensor, Tensor],
                    shear: tuple[Tensor, Tensor]) -> Tensor:
    """torchvision's _get_inverse_affine_matrix (scale 1), one float64 matrix per image: (k, 6)."""
    rot, sx, sy = torch.deg2rad(angle), torch.deg2rad(shear[0]), torch.deg2rad(shear[1])
    cx, cy = center
    cx_tx, cy_ty = cx + translate[0], cy + translate[1]
    a = torch.cos(rot - sy) / torch.cos(sy)
    b = -(a * torch.tan(sx) + torch.sin(rot))
    c = torch.sin(rot - sy) / torch.cos(sy)
    d = torch.cos(rot) - c * torch.tan(sx)
    m0, m1, m3, m4 = d, -b, -c, a
    m2 = cx - m0 * cx_tx - m1 * cy_ty
    m5 = cy - m3 * cx_tx - m4 * cy_ty
    return torch.stack([m0, m1, m2, m3, m4, m5], dim=1)


def affine_matrices(ops: Tensor, magnitude: Tensor, height: int, width: int) -> Tensor:
    """(k, 2, 3) float32 inverse matrices for geometric ops, as torchvision builds them:
    shears about the top-left corner, translations by whole pixels, rotations about the centre."""
    zero = torch.zeros_like(magnitude)
    is_op = {n: ops == OP_NAMES.index(n) for n in GEOMETRIC}
    shear_deg = torch.rad2deg(torch.atan(magnitude))
    shear_x = torch.where(is_op["ShearX"], shear_deg, zero)
    shear_y = torch.where(is_op["ShearY"], shear_deg, zero)
    shift = torch.trunc(magnitude)  # int(magnitude)
    tx = torch.where(is_op["TranslateX"], shift, zero)
    ty = torch.where(is_op["TranslateY"], shift, zero)
    angle = torch.where(is_op["Rotate"], -torch.remainder(magnitude, 360.0), zero)
    sheared = is_op["ShearX"] | is_op["ShearY"]  # center=[0, 0]: the top-left corner
    cx = torch.where(sheared, torch.full_like(magnitude, -0.5 * width), zero)
    cy = torch.where(sheared, torch.full_like(magnitude, -0.5 * height), zero)
    return _inverse_affine((cx, cy), angle, (tx, ty), (shear_x, shear_y)).float().view(-1, 2, 3)


def _affine_grid(theta: Tensor, height: int, width: int) -> Tensor:
    """torchvision's _affine_grid for a batch of matrices (k, 2, 3) -> (k, H, W, 2)."""
    base = torch.empty(1, height, width, 3, dtype=theta.dtype, device=theta.device)
    base[..., 0].copy_(torch.linspace((1.0 - width) * 0.5, (width - 1.0) * 0.5, steps=width, device=theta.device))
    base[..., 1].copy_(torch.linspace((1.0 - height) * 0.5, (height - 1.0) * 0.5, steps=height,
                                      device=theta.device).unsqueeze_(-1))
    base[..., 2].fill_(1)
    scale = torch.tensor([0.5 * width, 0.5 * height], dtype=theta.dtype, device=theta.device)
    rescaled = theta.transpose(1, 2).div(scale)
    k = theta.shape[0]
    return base.view(1, height * width, 3).expand(k, -1, -1).bmm(rescaled).view(k, height, width, 2)


def geometric(image: Tensor, ops: Tensor, magnitude: Tensor) -> Tensor:
    """Shear, translate and rotate (nearest, fill 0) with one matrix per image, one grid_sample."""
    h, w = image.shape[-2:]
    theta = affine_matrices(ops, magnitude, h, w).to(image.device, non_blocking=True)
    grid = _affine_grid(theta, h, w)
    out = F.grid_sample(image.float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return out.round_().to(torch.uint8)


COLOR_OPS = {"Brightness": brightness, "Color": color, "Contrast": contrast, "Sharpness": sharpness,
             "Posterize": posterize, "Solarize": solarize, "AutoContrast": autocontrast, "Equalize": equalize}
_GEOMETRIC_IDS = torch.tensor([OP_NAMES.index(n) for n in GEOMETRIC])


def apply(images: Tensor, params: AutoAugmentDraw) -> Tensor:
    """Apply each image's ops in slot order. ``images``: uint8 (n, C, H, W) on any device
    (changed in place and returned); ``params`` on the CPU. Each op runs once per slot on
    the images that drew it: the host knows who did, so no device sync is needed."""
    ops, mags = params.ops, params.magnitudes
    for slot in range(ops.shape[0]):
        slot_ops = ops[slot]
        geo = torch.isin(slot_ops, _GEOMETRIC_IDS).nonzero().flatten()
        if geo.numel():
            _apply_to(images, geo, lambda x, i=geo: geometric(x, slot_ops[i], mags[slot, i]))
        for name, fn in COLOR_OPS.items():
            idx = (slot_ops == OP_NAMES.index(name)).nonzero().flatten()
            if idx.numel():
                _apply_to(images, idx, lambda x, f=fn, i=idx: f(x, mags[slot, i]))
    return images


def _apply_to(images: Tensor, idx: Tensor, fn) -> None:
    index = idx.to(images.device, non_blocking=True)
    images.index_copy_(0, index, fn(images.index_select(0, index)))


__all__ = ["AutoAugmentDraw", "OP_NAMES", "POLICIES", "apply", "draw", "magnitude_table"]
