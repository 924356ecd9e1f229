"""The one status function (engine/record/status.py) on store rows and on event summaries."""
from __future__ import annotations

import os
import time

from engine.record.events import summarize
from engine.record.status import (COMPLETED, CRASHED, HEARTBEAT_STALE_S, LIVE, RESUMABLE, RUNNING, STALLED, STATUSES,
                                  TERMINAL, UNKNOWN, effective_status, summary_facts, this_host)

from tests.support.tui import DEAD_PID

NOW = time.time()


def row(**kw) -> dict:
    base = {"status": RUNNING, "pid": os.getpid(), "host": this_host(), "heartbeat_at": NOW, "started_at": NOW - 60,
            "progress_at": NOW}
    return {**base, **kw}


def test_the_vocabulary_is_whole_and_its_groups_do_not_overlap():
    assert set(STATUSES) == {"queued", "running", "completed", "stopped", "failed", "crashed", "stalled", "pruned"}
    assert not set(TERMINAL) & set(LIVE) and set(RESUMABLE) <= set(TERMINAL)


def test_a_running_row_is_running_while_its_process_lives_and_beats():
    assert effective_status(row(), now=NOW) == RUNNING
    assert effective_status(row(host=None), now=NOW) == RUNNING  # rows from before the host column


def test_a_dead_process_on_this_host_or_a_silent_one_anywhere_is_crashed():
    assert effective_status(row(pid=DEAD_PID), now=NOW) == CRASHED
    assert effective_status(row(host="elsewhere", pid=DEAD_PID), now=NOW) == RUNNING  # pid not checkable there
    silent = NOW - HEARTBEAT_STALE_S - 1
    assert effective_status(row(host="elsewhere", heartbeat_at=silent), now=NOW) == CRASHED
    assert effective_status(row(heartbeat_at=None, started_at=silent), now=NOW) == CRASHED


def test_stalled_only_with_a_threshold_and_only_while_alive():
    quiet = row(progress_at=NOW - 600)
    assert effective_status(quiet, now=NOW) == RUNNING  # off by default
    assert effective_status(quiet, now=NOW, stall_after_s=300) == STALLED
    assert effective_status(row(progress_at=NOW - 10), now=NOW, stall_after_s=300) == RUNNING
    assert effective_status(row(progress_at=NOW - 600, pid=DEAD_PID), now=NOW, stall_after_s=300) == CRASHED


def test_the_stall_gap_is_measured_at_the_last_heartbeat_not_now():
    """Between two beats the store's last step lags (the heartbeat writes it every 5 s): measured
    from now, a healthy run would look stalled for a moment under a short threshold."""
    beat_4s_ago = row(heartbeat_at=NOW - 4, progress_at=NOW - 4.1)
    assert effective_status(beat_4s_ago, now=NOW, stall_after_s=2) == RUNNING
    assert effective_status(row(heartbeat_at=NOW - 4, progress_at=NOW - 7), now=NOW, stall_after_s=2) == STALLED


def test_recorded_end_statuses_pass_through():
    for status in (COMPLETED, "stopped", "failed", "pruned"):
        assert effective_status(row(status=status, pid=DEAD_PID), now=NOW) == status
    assert effective_status({}, now=NOW) == UNKNOWN


def test_an_events_summary_gives_the_same_answer():
    start = {"type": "start", "t": NOW - 30, "pid": DEAD_PID, "host": this_host()}
    assert effective_status(summary_facts(summarize([start])), now=NOW) == CRASHED
    alive = {**start, "pid": os.getpid()}
    step = {"type": "step", "t": NOW - 1}
    assert effective_status(summary_facts(summarize([alive, step])), now=NOW, stall_after_s=20) == RUNNING
    # the engine beats on while its loop is stuck; each beat says when the last step was
    stuck = {"type": "heartbeat", "t": NOW - 1, "progress_t": NOW - 29}
    assert effective_status(summary_facts(summarize([alive, stuck])), now=NOW, stall_after_s=20) == STALLED
    moving = {"type": "heartbeat", "t": NOW - 1, "progress_t": NOW - 2}  # e.g. evaluation batches
    assert effective_status(summary_facts(summarize([alive, moving])), now=NOW, stall_after_s=20) == RUNNING
    end = {"type": "end", "t": NOW, "status": COMPLETED}
    assert effective_status(summary_facts(summarize([alive, step, end])), now=NOW) == COMPLETED
