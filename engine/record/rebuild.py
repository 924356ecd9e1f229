"""The store from the run directories: rebuild it, take in copied-in runs, survive a damaged one.

A run is identified by its directory name. A copied-in directory whose events name another
run id (another run's copy, or a hostile `../../etc`) is stored under its directory name and
flagged. A directory whose events cannot be read is skipped and named, never fatal.
"""
from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from ..errors import ConfigError
from .events import read_events, summarize
from .paths import check_run_id, events_path
from .store import DB_NAME, EPOCH_FIELDS, Store, db_path, transaction

UNREADABLE_GRACE_S = 5.0  # an events file younger than this may be a run writing its `start` right now


@dataclass
class IngestReport:
    added: int = 0
    skipped: list[tuple[Path, str]] = field(default_factory=list)   # (file or dir, why) for the user
    flagged: list[tuple[str, str]] = field(default_factory=list)    # (run id, flag)


def _run_row(run_id: str, events_file: Path) -> tuple[tuple, list[dict], str | None] | None:
    """(runs row values, epoch events, flag) from a run's events; None when it has no `start`."""
    state = summarize(read_events(events_file))
    start = state.get("start")
    if not start:
        return None
    named = start.get("run_id")
    flag = None if named == run_id else f"its events name run id {str(named)[:80]!r}; listed under its directory name"
    cfg = start.get("config") if isinstance(start.get("config"), dict) else {}
    end = state.get("end") or {}
    epochs = [e for k, e in state["epochs"].items() if isinstance(k, int) and not isinstance(k, bool)]
    wall = sum(e.get("epoch_s") or 0 for e in epochs if isinstance(e.get("epoch_s"), (int, float)))
    values = (run_id, str(cfg.get("name", start.get("config_name")) or run_id), state["status"],
              start.get("data_source"), start.get("device"), start.get("pid"), start.get("host"),
              str(events_file.parent), state.get("started_at"), end.get("t"), state.get("last_t") or start.get("t"),
              state.get("progress_t"), (cfg.get("train") or {}).get("epochs"), max((e["epoch"] for e in epochs), default=0),
              state["best_acc"], state["best_epoch"], wall, (cfg.get("reference") or {}).get("accuracy"),
              start.get("params"), start.get("flops"), start.get("world_size", 1), end.get("error"), json.dumps(cfg),
              flag, _text(start.get("study")), _text(start.get("group")), _int((cfg.get("train") or {}).get("seed")),
              _text((cfg.get("reference") or {}).get("kind")))
    return values, epochs, flag


_COLUMNS = ("run_id, config_name, status, data_source, device, pid, host, run_dir, started_at, ended_at, heartbeat_at, "
            "progress_at, epochs_total, epochs_done, best_acc, best_epoch, wall_s, reference_acc, params, flops, "
            "world_size, error, config_json, flag, study, group_key, seed, reference_kind")


def ingest_run_dirs(store: Store, *, replace: bool = False) -> IngestReport:
    """Add a row for every run directory the store lacks (replace=True: for every run directory).

    An engine may be starting right now: its own rows win (INSERT OR IGNORE) unless replacing."""
    report = IngestReport()
    known = set() if replace else store.run_ids()
    verb = "REPLACE" if replace else "IGNORE"
    try:
        entries = sorted((e for e in os.scandir(store.home) if e.name not in known and e.is_dir(follow_symlinks=False)),
                         key=lambda e: e.name)
    except OSError as exc:
        report.skipped.append((store.home, f"cannot list the runs directory ({exc.strerror})"))
        return report
    for entry in entries:
        events_file = events_path(entry.path)
        try:
            if events_file.stat().st_size == 0:
                continue  # an engine starting right now, or a run that never started
            check_run_id(entry.name)
            found = _run_row(entry.name, events_file)
        except FileNotFoundError:
            continue  # not a run directory (or one whose engine has not written anything yet)
        except ConfigError:
            report.skipped.append((Path(entry.path), "not a plain run id: not listed"))
            continue
        except (OSError, ValueError, TypeError) as exc:  # unreadable, or events of the wrong shape
            report.skipped.append((events_file, f"unreadable ({type(exc).__name__}: {exc}); run not listed"))
            continue
        if found is None:
            if time.time() - events_file.stat().st_mtime > UNREADABLE_GRACE_S:
                report.skipped.append((events_file, "no readable `start` event (damaged?); run not listed"))
            continue
        values, epochs, flag = found
        with transaction(store.conn) as c:
            c.execute(f"INSERT OR {verb} INTO runs ({_COLUMNS}) VALUES ({', '.join('?' * len(values))})", values)
            for e in epochs:
                c.execute(f"""INSERT OR {verb} INTO epochs (run_id, epoch, {', '.join(EPOCH_FIELDS)}, t)
                              VALUES (?, ?, {', '.join('?' * len(EPOCH_FIELDS))}, ?)""",
                          (entry.name, e["epoch"], *[_number(e.get(k)) for k in EPOCH_FIELDS], _number(e.get("t"))))
        report.added += 1
        if flag:
            report.flagged.append((entry.name, flag))
    return report


def rebuild_store(store: Store) -> int:
    """Re-create the run, epoch and evaluation rows from the run directories (the durable
    record); returns how many runs it read."""
    added = ingest_run_dirs(store, replace=True).added
    ingest_eval_files(store)
    return added


def ingest_eval_files(store: Store) -> None:
    """Evaluation results from their JSON files in the run dirs (runs/<id>/eval, runs/ensembles/<key>)."""
    files = sorted(store.home.glob("*/eval/*.json")) + sorted(store.home.glob("ensembles/*/*.json"))
    for path in files:
        try:
            result = json.loads(path.read_text(encoding="utf-8"))
            key = result["run_id"]
            members = [m["run_id"] for m in result.get("members") or []] or [key]
            store.eval_recorded(key, members, {**result, "t": path.stat().st_mtime})
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue  # a damaged or foreign file is not a result


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _number(value: object) -> float | None:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


@contextmanager
def _recovery_lock(home: Path) -> Iterator[None]:
    """One process at a time decides that the database is damaged and moves it aside."""
    with open(Path(home) / f".{DB_NAME}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def open_store(home: Path, warn: Callable[[str], None]) -> Store:
    """Open the workspace's store, whatever state it is in.

    A file that is not a SQLite database (or a damaged one SQLite refuses to open) is moved aside
    with one warning and the store is rebuilt from the run directories; run directories the store
    lacks (copied in) are added, and each one that cannot be read is named. Errors that say
    nothing about the file's content (locked, permissions) are raised as they are."""
    home = Path(home)
    try:
        store = Store(home)
    except sqlite3.OperationalError:
        raise
    except sqlite3.DatabaseError:
        with _recovery_lock(home):
            try:  # another process may have rebuilt it while we waited
                store = Store(home)
            except sqlite3.OperationalError:
                raise
            except sqlite3.DatabaseError as exc:
                aside = _move_aside(db_path(home))
                warn(f"{db_path(home)} is not a readable database ({exc}); moved to {aside.name}, "
                     "rebuilding it from the run directories")
                store = Store(home)
    report = ingest_run_dirs(store)
    for path, why in report.skipped:
        warn(f"{path}: {why}")
    return store


def _move_aside(path: Path) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%S")
    aside = path.with_name(f"{path.name}.damaged-{stamp}")
    n = 1
    while aside.exists():
        n += 1
        aside = path.with_name(f"{path.name}.damaged-{stamp}-{n}")
    os.replace(path, aside)
    for suffix in ("-wal", "-shm"):  # the journal of a damaged file belongs to it
        side = path.with_name(path.name + suffix)
        if side.exists():
            os.replace(side, aside.with_name(aside.name + suffix))
    return aside
