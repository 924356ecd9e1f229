"""Seeds derived from integers, so that randomness is a pure function of (seed, epoch, step, ...)."""
from __future__ import annotations

import hashlib


def seed_int(*values: int, tag: str = "") -> int:
    """A 63-bit seed from integers: stable across processes, platforms and Python versions."""
    h = hashlib.blake2b(digest_size=8, person=b"cifar-tui-data")
    h.update(tag.encode())
    for v in values:
        h.update(int(v).to_bytes(16, "little", signed=True))
    return int.from_bytes(h.digest(), "little") & ((1 << 63) - 1)
