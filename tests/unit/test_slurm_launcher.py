"""The SLURM launcher's pieces that need no cluster (tests/integration/test_slurm.py runs them on one):
sbatch's refusals as one line naming the option, the warning time, a stop delivered twice by SLURM
counted once, a run submitted to SLURM shown queued with its job (CLI and TUI) and never taken for
lost while squeue answers, and the Optuna studies of an older optuna.db carried into the journal."""
from __future__ import annotations

import signal
import time

import pytest

from cifar_tui.launchers import SlurmLauncher, SlurmOptions, SubmissionRefused, refusal_line, warning_s
from cifar_tui.supervisor import Supervisor
from cifar_tui.tui.runs_index import RunsIndex
from cifar_tui.workspace import Workspace
from engine import lifecycle, stop_request
from engine.record.store import Store

from tests.support.tui import fake_workspace

SBATCH = "sbatch: error: invalid partition specified: gpu\nsbatch: error: Batch job submission failed: {}"


@pytest.mark.parametrize("reason, line", [
    ("Invalid partition name specified", "--slurm-partition gpu: SLURM has no such partition"),
    ("Requested time limit is invalid (missing or exceeds some limit)", "--slurm-time 90: over the partition's time"),
    ("Requested node configuration is not available", "--slurm-gpus-per-node 2 / --nproc 2 / --nnodes 1: no node"),
    ("Invalid account or account/partition combination specified", "--launcher slurm: sbatch refused the job: Invalid"),
])
def test_sbatch_refusals_are_one_line_naming_the_option(reason, line):
    got = refusal_line(RuntimeError(SBATCH.format(reason)), SlurmOptions(partition="gpu", time_min=90, nproc=2), 2)
    assert got.startswith(line) and "\n" not in got and got.endswith(reason)


def test_the_time_limit_warning_leaves_a_short_job_time_to_start_and_a_long_one_two_minutes():
    # slurmctld looks every 30 s: a 1-minute job is warned 10-40 s in, never before its engine listens
    assert [warning_s(m) for m in (1, 2, 6, 60, 24 * 60)] == [20, 40, 120, 120, 120]


def test_a_stop_signal_delivered_twice_at_once_counts_once_a_later_one_stops_at_once(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(lifecycle.time, "monotonic", lambda: clock[0])
    stop = lifecycle.StopRequested()
    stop._handle(signal.SIGUSR2, None)  # SLURM's warning, straight from slurmstepd
    clock[0] += 0.05
    stop._handle(signal.SIGTERM, None)  # the same stop, passed on by the job's launcher
    assert stop.flag
    clock[0] += lifecycle.StopRequested.SAME_STOP_S + 0.5
    with pytest.raises(KeyboardInterrupt):  # a second request, later: stop at once
        stop._handle(signal.SIGINT, None)


@pytest.mark.parametrize("sig", [signal.SIGUSR2, signal.SIGTERM])
def test_a_stop_that_comes_while_the_engine_starts_is_honoured_once_it_listens(monkeypatch, sig):
    """SLURM's warning (SIGUSR2), or the job launcher's SIGTERM that passes it on, while the engine
    imports torch: held, then a graceful stop once the trainer listens; afterwards the handlers are
    those from before the hold."""
    monkeypatch.setattr(stop_request, "_early_stops", [])
    monkeypatch.setattr(stop_request, "_before_hold", {})
    before = {s: signal.getsignal(s) for s in stop_request.EARLY_STOP_SIGNALS}
    try:
        stop_request.hold_early_stops()
        signal.raise_signal(sig)  # would end the process without the hold
        stop = lifecycle.StopRequested()
        stop.install()
        try:
            assert stop.flag
        finally:
            stop.restore()
        assert {s: signal.getsignal(s) for s in stop_request.EARLY_STOP_SIGNALS} == before
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)


def test_a_stop_request_written_while_the_engine_starts_is_kept_one_from_an_earlier_life_is_not(tmp_path):
    started = time.time()
    watcher = stop_request.StopRequestWatcher(tmp_path, keep_since=started)  # as the trainer makes it
    stop_request.write_request(tmp_path, "stopped", "the SLURM job's time limit is near")
    watcher.clear()  # the trainer starts: this request is for this life
    assert stop_request.read_request(tmp_path)["reason"] == "the SLURM job's time limit is near"
    stop_request.StopRequestWatcher(tmp_path, keep_since=started + 60).clear()  # older than the process
    assert stop_request.read_request(tmp_path) is None


def test_a_run_submitted_to_slurm_is_queued_with_its_job_until_its_engine_starts(tmp_path):
    ws, ids = fake_workspace(tmp_path)
    store = Store(ws.home)
    try:
        store.add_job("resnet18_baseline-20260101T990000Z-0f0f", "slurm", "41_3", str(tmp_path))  # a new run
        store.add_job(ids["s_stop"], "slurm", "42", str(tmp_path))  # a resume of a stopped run
        sup = Supervisor(ws, gpus=[])
        try:
            rows = {r["run_id"]: r for r in sup.runs()}
            assert rows["resnet18_baseline-20260101T990000Z-0f0f"]["status"] == "queued"
            assert (rows[ids["s_stop"]]["status"], rows[ids["s_stop"]]["job_id"]) == ("queued", "42")
            assert sup.status(ids["s_stop"]) == "queued"  # not resumed twice
            index = RunsIndex(Store(ws.home))
            index.refresh()
            assert index.runs["resnet18_baseline-20260101T990000Z-0f0f"]["device"] == "slurm job 41_3"
            assert (index.runs[ids["s_stop"]]["status"], index.runs[ids["s_stop"]]["device"]) == ("queued", "slurm job 42")

            store.heartbeat(ids["s_stop"])  # the resumed engine beats: no longer waiting in SLURM's queue
            assert {r["run_id"]: r for r in sup.runs()}[ids["s_stop"]]["status"] == "stopped"
            changes = index.refresh()
            assert ids["s_stop"] in changes.changed and index.runs[ids["s_stop"]]["status"] == "stopped"
            index.store.close()
        finally:
            sup.close()
    finally:
        store.close()


def test_a_job_submitted_while_squeue_answers_is_not_taken_for_lost(tmp_path, monkeypatch):
    """`runs` asks squeue about the pending jobs, then marks those it does not list `lost`: a job
    submitted by another process between the question and the answer was not asked about (the
    cluster test's `runs` marked a resume submitted at that moment lost, 0.3 s after sbatch took it)."""
    import cifar_tui.launchers as launchers

    ws, _ = fake_workspace(tmp_path)
    store = Store(ws.home)

    def squeue(job_ids):  # while it answers, another CLI submits job 43
        store.add_job("resnet18_baseline-20260101T990000Z-0f0f", "slurm", "43", str(tmp_path))
        return {"41_3": "PENDING"} if "41_3" in job_ids else {}

    monkeypatch.setattr(launchers, "slurm_states", squeue)
    try:
        store.add_job("resnet18_baseline-20260101T990000Z-0e0e", "slurm", "41_3", str(tmp_path))
        store.add_job("resnet18_baseline-20260101T990000Z-0d0d", "slurm", "40", str(tmp_path))  # ended long ago
        assert launchers.refresh_pending(store) == ["resnet18_baseline-20260101T990000Z-0d0d"]
        assert {j["job_id"] for j in store.pending_jobs()} == {"41_3", "43"}  # 43: asked about next time
    finally:
        store.close()


def test_the_studies_of_an_older_sqlite_storage_are_carried_into_the_journal(tmp_path):
    import optuna

    from cifar_tui.tune import LEGACY_STORAGE_FILE, _storage
    from cifar_tui.workspace import Workspace

    home = tmp_path / "runs"
    home.mkdir()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    old = optuna.create_study(study_name="old", storage=f"sqlite:///{home / LEGACY_STORAGE_FILE}", direction="maximize")
    old.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    journal = _storage(Workspace(home=home, data_root=tmp_path))
    copied = optuna.load_study(study_name="old", storage=journal)
    assert [t.params for t in copied.trials] == [t.params for t in old.trials]
    assert not (home / LEGACY_STORAGE_FILE).exists() and (home / f"{LEGACY_STORAGE_FILE}.copied").is_file()
    # a second open finds nothing left to copy
    assert len(optuna.load_study(study_name="old", storage=_storage(Workspace(home=home, data_root=tmp_path))).trials) == 3


def test_the_tuis_runs_tab_lists_a_run_waiting_in_slurms_queue_with_its_job(tmp_path):
    import asyncio

    from textual.widgets import DataTable

    from cifar_tui.tui.app import CifarTUI
    from tests.support.tui import until_loaded

    ws, ids = fake_workspace(tmp_path)
    waiting = "resnet18_baseline-20260101T990000Z-0f0f"
    store = Store(ws.home)
    store.add_job(waiting, "slurm", "41_3", str(tmp_path))
    store.close()

    async def scenario():
        app = CifarTUI(ws, max_parallel=1)
        async with app.run_test(size=(230, 40)) as pilot:  # wide: every column shown
            await until_loaded(pilot, app)
            await pilot.press("2")
            table = app.query_one("#runs-table", DataTable)
            for _ in range(100):
                if waiting in table.rows:
                    break
                await pilot.pause(0.05)
            cells = [getattr(c, "plain", str(c)) for c in table.get_row(waiting)]
            assert "queued" in cells[0] and "slurm job 41_3" in cells

    asyncio.run(scenario())


def test_sbatch_not_found_only_when_sbatch_itself_is_missing(tmp_path, monkeypatch):
    # A real submission on a machine with srun but no sbatch: the error submitit really raises
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    ws = Workspace(home=tmp_path / "runs", data_root=tmp_path / "data", configs=None)
    with pytest.raises(SubmissionRefused) as refused:
        SlurmLauncher(SlurmOptions()).submit_calls(ws, [(print, "never runs")], on_cpu=True)
    assert str(refused.value) == "--launcher slurm: sbatch not found (is this a SLURM login node?)"
    left = [p.name for p in (tmp_path / "runs" / ".jobs").iterdir()]
    assert left == [".submit.lock"], left  # the submission's pickles and script are removed

    options = SlurmOptions()
    other = FileNotFoundError(2, "No such file or directory", "/home/u/runs/.jobs/x_submitted.pkl")
    got = refusal_line(other, options, 0)  # another file gone (a submission's pickle): said as it is
    assert "sbatch not found" not in got and "x_submitted.pkl" in got and "\n" not in got
