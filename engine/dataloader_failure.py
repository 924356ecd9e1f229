"""Telling a dead DataLoader worker apart from other failures (the albumentations pipeline runs in
workers): torch reports a killed worker as "DataLoader worker (pid N) is killed by signal" or
"... exited unexpectedly", but when the worker dies while handing over a batch the training process
sees the lost connection first (ConnectionResetError, EOFError) raised inside torch's DataLoader."""
from __future__ import annotations

from types import TracebackType

_DEATH_WORDS = ("is killed by signal", "exited unexpectedly")
_LOST_CONNECTION = (ConnectionError, EOFError)


def _in_dataloader(tb: TracebackType | None) -> bool:
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename.replace("\\", "/")
        if "/torch/utils/data/" in filename:
            return True
        tb = tb.tb_next
    return False


def dataloader_failure(exc: BaseException) -> str | None:
    """The run's failure message when `exc` means a DataLoader worker died; None otherwise."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    died = "DataLoader worker" in text and any(w in text for w in _DEATH_WORDS)
    if not died and not (isinstance(exc, _LOST_CONNECTION) and _in_dataloader(exc.__traceback__)):
        return None
    if not died:
        text = f"lost the connection to it: {type(exc).__name__}: {text}"
    return (f"a DataLoader worker of the augmentation pipeline died ({text}); see dmesg for the out-of-memory "
            f"killer, try fewer workers (--set data.num_workers=N), then `cifar-tui resume`")[:500]
