"""Where `cifar-tui tune` keeps its Optuna studies: runs/optuna.journal, Optuna's JournalStorage.

A journal is an append-only log of the study's changes; its lock is a file created with O_EXCL
(Optuna's JournalFileOpenLock, broken 30 s after a holder died), which NFS honours where SQLite's
locking does not: SLURM workers on several nodes share one study (cifar_tui/tune_workers.py).
Studies of the SQLite storage of earlier versions (runs/optuna.db) are copied in the first time
the journal is opened; the old file is kept as optuna.db.copied.
"""
from __future__ import annotations

from pathlib import Path

from .workspace import Workspace

STORAGE_FILE = "optuna.journal"
LEGACY_STORAGE_FILE = "optuna.db"   # the SQLite storage of earlier versions: its studies are copied once


def storage_path(ws: Workspace) -> Path:
    return (Path(ws.home) / STORAGE_FILE).resolve()


def file_lock(path: Path):
    """Optuna's lock for NFS (a lock file created with O_EXCL; one left by a dead holder is broken
    after 30 s): `acquire()` waits for it, `release()`."""
    from optuna.storages.journal import JournalFileOpenLock

    return JournalFileOpenLock(str(path))


def open_storage(ws: Workspace):
    """The workspace's Optuna storage (runs/optuna.journal), created when missing."""
    import optuna
    from optuna.storages.journal import JournalFileBackend

    Path(ws.home).mkdir(parents=True, exist_ok=True)
    path = storage_path(ws)
    storage = optuna.storages.JournalStorage(JournalFileBackend(str(path), lock_obj=file_lock(path)))
    if (Path(ws.home) / LEGACY_STORAGE_FILE).is_file():
        _copy_legacy(ws, storage)
    return storage


def _copy_legacy(ws: Workspace, storage) -> None:
    """Copy the studies of runs/optuna.db (SQLite, earlier versions) into the journal, once; the
    old file is kept as optuna.db.copied."""
    import optuna

    legacy = Path(ws.home) / LEGACY_STORAGE_FILE
    lock = file_lock(legacy)
    lock.acquire()
    try:
        if not legacy.is_file():
            return  # another process copied it while we waited
        old = optuna.storages.RDBStorage(f"sqlite:///{legacy.resolve()}")
        have = {s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}
        for summary in optuna.get_all_study_summaries(old, include_best_trial=False):
            if summary.study_name not in have:
                optuna.copy_study(from_study_name=summary.study_name, from_storage=old, to_storage=storage)
        old.engine.dispose()
        legacy.rename(legacy.with_name(LEGACY_STORAGE_FILE + ".copied"))
    finally:
        lock.release()
