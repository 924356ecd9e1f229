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
# The ops. Each takes uint8 (k, C, H, W) images and their parameters (k, PARAMS) float32 on the
# same device, worked out on the CPU from the magnitudes in float64 as torchvision does with
# Python floats (see derived_params), and mirrors torchvision's kernel for one image. An op that
# computes in float returns the clamped float result: apply() copies it into the uint8 batch,
# which truncates exactly as torchvision's final .to(uint8) (one pass less per op).

RATIO, ALPHA, THRESHOLD, MASK, THETA = 0, 1, 2, 3, 4   # columns of the parameter rows
PARAMS = THETA + 6


def _col(p: Tensor, i: int) -> Tensor:
    return p[:, i].view(-1, 1, 1, 1)


def _fma(t: Tensor, other: Tensor, alpha: Tensor) -> Tensor:
    """t + alpha * other rounded once, as torchvision's ``add_(other, alpha=a)`` computes it (a fused
    multiply-add on CPU and CUDA). torch's addcmul fuses it too: equal on every test image, and on
    2M random operands against the sum taken exactly in float64 and rounded once."""
    return torch.addcmul(t, other, alpha)


def _blend(image: Tensor, other: Tensor, p: Tensor) -> Tensor:
    """torchvision's _blend with a ratio per image: image * r + other * (1 - r), clamped, truncated."""
    return _fma(image * _col(p, RATIO), other, _col(p, ALPHA)).clamp_(0, 255)


def _gray(image: Tensor) -> Tensor:
    r, g, b = image.unbind(dim=-3)
    return r.mul(0.2989).add_(g, alpha=0.587).add_(b, alpha=0.114).unsqueeze(-3).floor_()


def brightness(image: Tensor, p: Tensor) -> Tensor:
    return image.mul(_col(p, RATIO)).clamp_(0, 255)


def color(image: Tensor, p: Tensor) -> Tensor:
    return _blend(image, _gray(image), p)


def contrast(image: Tensor, p: Tensor) -> Tensor:
    return _blend(image, _gray(image).mean(dim=(-3, -2, -1), keepdim=True), p)


_SHARPNESS_KERNEL: dict[torch.device, Tensor] = {}


def sharpness(image: Tensor, p: Tensor) -> Tensor:
    """torchvision's 3x3 smoothing (1/13, centre 5/13). The integer sum S of the 3x3 window (weights
    1, centre 5) is exact in float32, and S / 13 is never a tie (13 is odd) nor within float error
    of one, so round(S / 13) is exactly torchvision's rounded float convolution."""
    kernel = _SHARPNESS_KERNEL.get(image.device)
    if kernel is None:
        kernel = torch.ones(3, 1, 3, 3, device=image.device)
        kernel[:, :, 1, 1] = 5.0
        _SHARPNESS_KERNEL[image.device] = kernel
    out = image.float()
    blurred = F.conv2d(out, kernel, groups=3).div_(13.0).round_()
    inner = out[..., 1:-1, 1:-1]
    inner.copy_(_fma(inner, blurred.sub_(inner), _col(p, ALPHA)))
    return out.clamp_(0, 255)


def posterize(image: Tensor, p: Tensor) -> Tensor:
    return image & _col(p, MASK).to(torch.uint8)


def solarize(image: Tensor, p: Tensor) -> Tensor:
    # for integer pixels, x >= t (float) is x >= ceil(t): compared in int16 (t may be 256).
    # 255 - x is x ^ 255 for uint8: an xor with 0 or 255 (torch.where on uint8 is 4x slower on the CPU)
    mask = image.to(torch.int16) >= _col(p, THRESHOLD).to(torch.int16)
    return image ^ mask.view(torch.uint8).mul_(255)


def autocontrast(image: Tensor, p: Tensor) -> Tensor:  # noqa: ARG001 - no parameter
    return TF.autocontrast(image)


def equalize(image: Tensor, p: Tensor) -> Tensor:  # noqa: ARG001 - no parameter
    """torchvision's equalize_image (PIL's lookup table), for uint8 batches, with one change that
    keeps the result: the count of the last non-empty histogram bin is read at the image's
    maximum instead of at an argmax over the cumulative histogram (slow on CPU)."""
    k, c, h, w = image.shape
    flat = image.reshape(k, c, h * w).long()
    hist = torch.zeros(k, c, 256, dtype=torch.int32, device=image.device)
    hist.scatter_add_(-1, flat, torch.ones(1, dtype=torch.int32, device=image.device).expand_as(flat))
    cum = hist.cumsum(-1)
    non_max = h * w - hist.gather(-1, flat.amax(-1, keepdim=True))
    step = torch.div(non_max, 255, rounding_mode="floor")
    lut = torch.div(cum[..., :-1] + torch.div(step, 2, rounding_mode="floor"), step.clamp(min=1),
                    rounding_mode="floor").clamp_(0, 255).to(torch.uint8)
    lut = torch.cat([lut.new_zeros(k, c, 1), lut], dim=-1)
    identity = torch.arange(256, dtype=torch.uint8, device=image.device)
    lut = torch.where(step != 0, lut, identity)  # a channel of one value (step 0) stays as it is
    return lut.gather(-1, flat).view_as(image)


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
    """(k, 6) float64 inverse matrices, identity for non-geometric ops, as torchvision builds them:
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
    return _inverse_affine((cx, cy), angle, (tx, ty), (shear_x, shear_y))


_BASE_GRIDS: dict[tuple[int, int, torch.dtype, torch.device], Tensor] = {}


def _base_grid(height: int, width: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """torchvision's base grid of pixel centres (x, y, 1), (H*W, 3); made once per size."""
    key = (height, width, dtype, device)
    if key not in _BASE_GRIDS:
        base = torch.empty(1, height, width, 3, dtype=dtype, device=device)
        base[..., 0].copy_(torch.linspace((1.0 - width) * 0.5, (width - 1.0) * 0.5, steps=width, device=device))
        base[..., 1].copy_(torch.linspace((1.0 - height) * 0.5, (height - 1.0) * 0.5, steps=height,
                                          device=device).unsqueeze_(-1))
        base[..., 2].fill_(1)
        _BASE_GRIDS[key] = base.view(height * width, 3)
    return _BASE_GRIDS[key]


def _affine_grid(theta: Tensor, height: int, width: int) -> Tensor:
    """torchvision's _affine_grid for a batch of matrices (k, 2, 3) -> (k, H, W, 2)."""
    scale = torch.tensor([0.5 * width, 0.5 * height], dtype=theta.dtype, device=theta.device)
    rescaled = theta.transpose(1, 2).div(scale)                      # (k, 3, 2)
    k = theta.shape[0]
    # one (HW, 3) @ (3, 2k) product instead of k small ones: the same sums, far fewer calls
    grid = _base_grid(height, width, theta.dtype, theta.device).mm(rescaled.permute(1, 0, 2).reshape(3, 2 * k))
    return grid.view(height, width, k, 2).permute(2, 0, 1, 3)


GEOMETRIC_CHUNK = 48  # images per grid_sample: its float input, grid and output stay in a CPU's L2 cache


def geometric(image: Tensor, p: Tensor) -> Tensor:
    """Shear, translate and rotate (nearest, fill 0) with one matrix per image, one grid_sample per
    chunk of images (on the CPU a batch of 100 sampled at once runs 3x slower per image: cache misses)."""
    if image.device.type == "cpu" and image.shape[0] > GEOMETRIC_CHUNK:
        return torch.cat([_geometric(i, q) for i, q in zip(image.split(GEOMETRIC_CHUNK), p.split(GEOMETRIC_CHUNK))])
    return _geometric(image, p)


def _geometric(image: Tensor, p: Tensor) -> Tensor:
    h, w = image.shape[-2:]
    grid = _affine_grid(p[:, THETA:].reshape(-1, 2, 3), h, w)
    out = F.grid_sample(image.float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return out.round_()


def derived_params(ops: Tensor, magnitude: Tensor, height: int, width: int) -> Tensor:
    """(k, PARAMS) float32 rows: what each op needs, computed in float64 like torchvision's
    Python floats, then rounded to float32 as its kernels round them."""
    ratio = 1.0 + magnitude
    bits = magnitude.to(torch.int64).clamp(0, 8)
    rows = torch.zeros(magnitude.shape[0], PARAMS, dtype=torch.float64)
    rows[:, RATIO] = ratio
    rows[:, ALPHA] = 1.0 - ratio
    rows[:, THRESHOLD] = torch.ceil((255.0 * magnitude).float().double())  # x >= t for uint8 x: x >= ceil(t)
    rows[:, MASK] = (((1 << bits) - 1) << (8 - bits)).double()
    rows[:, THETA:] = affine_matrices(ops, magnitude, height, width)
    return rows.float()


# op index -> group: 0 does nothing (Identity), 1 the geometric ops together, 2.. one colour op each
_COLOR = (brightness, color, contrast, sharpness, posterize, solarize, autocontrast, equalize)
_COLOR_NAMES = ("Brightness", "Color", "Contrast", "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize")
_GROUP_FNS = (None, geometric, *_COLOR)
_GROUP_OF_OP = torch.tensor([0 if n == "Identity" else 1 if n in GEOMETRIC else 2 + _COLOR_NAMES.index(n)
                             for n in OP_NAMES])


def apply(images: Tensor, params: AutoAugmentDraw) -> Tensor:
    """Apply each image's ops in slot order to a uint8 (n, C, H, W) batch on any device; returns
    a new contiguous batch. Per slot the batch is reordered once so that the images of each op
    are one slice (an op runs once per slot, on its slice); all orders and parameters are worked
    out on the CPU and reach the device in one copy: no device sync."""
    n, _, h, w = images.shape
    slots = params.ops.shape[0]
    order = torch.arange(n)                      # x[i] is image order[i]
    moves, orders, bounds = [], [], []
    for slot in range(slots):
        group = _GROUP_OF_OP[params.ops[slot]]
        move = torch.argsort(group[order], stable=True)
        order = order[move]
        moves.append(move)
        orders.append(order)
        bounds.append(torch.bincount(group[order], minlength=len(_GROUP_FNS)).cumsum(0).tolist())
    moves.append(torch.argsort(order))           # back to the batch's order
    at = torch.stack(orders)                     # (slots, n): the image at each position of each slot
    rows = derived_params(params.ops.gather(1, at).flatten(), params.magnitudes.gather(1, at).flatten(), h, w)
    packed = torch.cat([torch.stack(moves).flatten().float(), rows.flatten()])
    if images.device.type == "cuda":
        packed = packed.pin_memory()
    packed = packed.to(images.device, non_blocking=True)
    dev_moves = packed[:(slots + 1) * n].view(slots + 1, n).long()
    dev_rows = packed[(slots + 1) * n:].view(slots, n, PARAMS)
    x = images.contiguous()
    for slot in range(slots):
        x = x.index_select(0, dev_moves[slot])
        start = 0
        for fn, end in zip(_GROUP_FNS, bounds[slot]):
            if fn is not None and end > start:
                x[start:end] = fn(x[start:end], dev_rows[slot, start:end])
            start = end
    return x.index_select(0, dev_moves[slots])


__all__ = ["AutoAugmentDraw", "OP_NAMES", "POLICIES", "apply", "derived_params", "draw", "magnitude_table"]
