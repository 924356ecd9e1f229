"""A folder that refuses new files whoever runs the tests, in this process (no `chattr` needed).

An ordinary user gets `chmod 0500`. Root (CI runs as root) ignores permission bits, so there
the folder gets the immutable flag, which is what `chattr +i` sets (FS_IOC_SETFLAGS), and which
stops root too. Where neither works (root on a file system without the flag, or without
CAP_LINUX_IMMUTABLE) `unwritable` yields False and the caller says so with a skip.
"""
from __future__ import annotations

import array
import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

FS_IOC_GETFLAGS = 0x80086601
FS_IOC_SETFLAGS = 0x40086602
FS_IMMUTABLE_FL = 0x00000010


def set_immutable(path: Path, on: bool) -> bool:
    """Set or clear the immutable flag of `path`; False where the file system or we cannot."""
    try:
        fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if Path(path).is_dir() else 0))
    except OSError:
        return False
    try:
        flags = array.array("i", [0])
        fcntl.ioctl(fd, FS_IOC_GETFLAGS, flags, True)
        flags[0] = flags[0] | FS_IMMUTABLE_FL if on else flags[0] & ~FS_IMMUTABLE_FL
        fcntl.ioctl(fd, FS_IOC_SETFLAGS, flags, True)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def _refuses_new_files(folder: Path) -> bool:
    probe = folder / ".unwritable-probe"
    try:
        probe.touch()
    except OSError:
        return True
    probe.unlink()
    return False


@contextmanager
def unwritable(folder: Path) -> Iterator[bool]:
    """Inside: `folder` refuses new files (True), or could not be made to (False)."""
    folder = Path(folder)
    if os.geteuid() != 0:
        mode = folder.stat().st_mode
        folder.chmod(0o500)
        try:
            yield _refuses_new_files(folder)
        finally:
            folder.chmod(mode)
        return
    if not set_immutable(folder, True):
        yield False
        return
    try:
        yield _refuses_new_files(folder)
    finally:
        set_immutable(folder, False)


WHY_NOT = ("running as root, which file permissions do not stop, on a file system without the "
           "immutable flag (chattr +i) or without the right to set it")
