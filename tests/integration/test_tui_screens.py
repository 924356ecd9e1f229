"""App behaviour on a fake workspace (no engine): filter, palette, leaderboard sort/compare,
delete with confirmation, the queue held while a slot is busy, quitting with live runs."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from textual.command import CommandPalette
from textual.widgets import DataTable, Input, Static

from cifar_tui.tui.app import CifarTUI
from cifar_tui.tui.screens import CompareScreen, ConfirmScreen, LaunchScreen, QuitScreen
from engine.config import list_config_paths, load_config
from engine.record.status import pid_alive

from tests.support.tui import until_form, ROOT, fake_workspace, footer_keys, until_loaded

SIZE = (160, 48)


def cell_text(value) -> str:
    return value.plain if hasattr(value, "plain") else str(value)


def row_dict(table: DataTable, key: str) -> dict[str, str]:
    return {c.value: cell_text(v) for c, v in zip(table.columns, table.get_row(key))}


def run(coro):
    return asyncio.run(coro)


def test_experiment_list_filter_and_yaml(tmp_path):
    ws, _ = fake_workspace(tmp_path)

    async def scenario():
        app = CifarTUI(ws, max_parallel=1)
        # wide enough for every column beside the YAML (narrower, input and pre go first)
        async with app.run_test(size=(200, 48)) as pilot:
            await until_loaded(pilot, app)
            table = app.query_one("#exp-table", DataTable)
            assert table.row_count == len(list_config_paths(ROOT / "configs"))
            base = row_dict(table, "resnet18_baseline")
            assert base["seed"] == "44.26 seed" and base["model"] == "resnet18" and base["input"] == "32"
            assert base["best"] == "40.39"  # best CIFAR-100 result of the fake runs
            assert row_dict(table, "resnet18_cifar_sgd")["best"].endswith("syn")  # only synthetic so far
            await pilot.press("slash", *"arcface 224")
            assert {k.value for k in table.rows} == {"resnet18_pretrained_arcface_224x224",
                                                     "resnet50_pretrained_arcface_224x224"}
            await pilot.press("enter")
            assert app.focused is table
            yaml_text = app.experiments_pane.yaml_text
            assert "image_size: 224" in yaml_text and "margin: arcface" in yaml_text
            await pilot.press("down")
            assert "backbone: resnet50" in app.experiments_pane.yaml_text
            await pilot.press("slash", "escape")  # escape clears the filter
            assert table.row_count == len(list_config_paths(ROOT / "configs"))

    run(scenario())


def test_launch_form_validates_before_anything_starts(tmp_path):
    ws, _ = fake_workspace(tmp_path)

    async def scenario():
        app = CifarTUI(ws, max_parallel=1)
        async with app.run_test(size=SIZE) as pilot:
            await until_loaded(pilot, app)
            first = app.experiments_pane.highlighted()
            await pilot.press("l")
            form = await until_form(pilot, app)
            assert form.names == [first]
            epochs = load_config(first).train.epochs
            assert form.query_one("#f-epochs", Input).value == str(epochs)  # prefilled from the config
            form.query_one("#f-set", Input).value = "optim.lr=-1"
            await pilot.press("ctrl+s")
            assert app.screen is form
            assert "optim.lr" in str(form.query_one("#form-error", Static).render())
            form.query_one("#f-set", Input).value = "nonsense"
            await pilot.press("ctrl+s")
            assert "KEY.PATH=VALUE" in str(form.query_one("#form-error", Static).render())
            form.query_one("#f-set", Input).value = "data.nope=1"
            await pilot.press("ctrl+s")
            assert "unknown key" in str(form.query_one("#form-error", Static).render())
            await pilot.press("escape")
            assert not isinstance(app.screen, LaunchScreen)
            assert app.store.queued() == [] and app.sup.children == {}

    run(scenario())


def test_launch_form_refuses_a_malformed_study_with_the_clis_line(tmp_path):
    """The form's refusal of a malformed list, a value listed twice, 0 seeds and a path as a study
    name is the line `cifar-tui run ... --dry-run` prints for the same input (exit 2)."""
    from tests.conftest import CLI

    ws, _ = fake_workspace(tmp_path)
    cases = [("optim.lr=1e-3,,3e-3", "1", ""), ("optim.lr=1e-3,0.001", "1", ""), ("optim.lr=1e-3,3e-3", "0", ""),
             ("optim.lr=1e-3,3e-3", "2", "a/b")]
    env = {**os.environ, "CIFAR_TUI_HOME": str(ws.home), "CIFAR_TUI_DATA": str(ws.data_root)}
    expected = []
    for sets, seeds, study in cases:
        args = [*CLI, "run", "resnet18_baseline", "--set", sets, "--seeds", seeds, "--dry-run"]
        args += ["--study", study] if study else []
        out = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
        lines = out.stderr.strip().splitlines()
        assert out.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), out.stderr
        expected.append(lines[0].removeprefix("error: "))

    async def scenario():
        app = CifarTUI(ws, max_parallel=1)
        async with app.run_test(size=SIZE) as pilot:
            await until_loaded(pilot, app)
            app.experiments_pane.launch(["resnet18_baseline"])
            form = await until_form(pilot, app)
            for (sets, seeds, study), line in zip(cases, expected):
                form.query_one("#f-set", Input).value = sets
                form.query_one("#f-seeds", Input).value = seeds
                form.query_one("#f-study", Input).value = study
                await pilot.press("ctrl+s")
                assert app.screen is form
                assert str(form.query_one("#form-error", Static).render()) == f"✖ {line}"
            await pilot.press("escape")
            assert app.store.queued() == []

    run(scenario())


def test_command_palette_runs_main_actions(tmp_path):
    ws, ids = fake_workspace(tmp_path)

    async def scenario():
        app = CifarTUI(ws, max_parallel=1)
        async with app.run_test(size=SIZE) as pilot:
            await until_loaded(pilot, app)
            await pilot.press("ctrl+p")
            assert isinstance(app.screen, CommandPalette)
            await pilot.press(*"leaderboard")
            await pilot.pause(0.3)
            await pilot.press("enter")
            await pilot.pause(0.1)
            assert app.active_tab == "leaderboard"
            # a run can be opened (and stopped / resumed) by name from the palette
            await pilot.press("ctrl+p", *f"open run {ids['c_pre'][-4:]}")
            await pilot.pause(0.3)
            await pilot.press("enter")
            await pilot.pause(0.2)
            assert ids["c_pre"] in app.views and app.current_view_run() == ids["c_pre"]
            from cifar_tui.tui.palette import CifarCommands

            names = [c[0] for c in CifarCommands(app.screen)._commands(with_items=True)]
            for expected in ("Launch experiment", "Show leaderboard", "Compare marked runs", "Stop run", "Resume run",
                             f"Resume run {ids['s_stop']}", f"Launch resnet18_baseline"):
                assert expected in names

    run(scenario())


def test_leaderboard_groups_sorts_and_compares(tmp_path):
    ws, ids = fake_workspace(tmp_path)

    async def scenario():
        app = CifarTUI(ws, max_parallel=1)
        async with app.run_test(size=SIZE) as pilot:
            await until_loaded(pilot, app)
            await pilot.press("3")
            lb = app.query_one("#lb-table", DataTable)
            keys = [r.key.value for r in lb.ordered_rows]  # as listed
            # CIFAR-100 first (best first), synthetic ranked apart after it
            assert keys == [ids["c_pre"], ids["c_base"], ids["s_base"], ids["s_stop"], ids["s_crash"]]
            assert [row_dict(lb, k)["rank"] for k in keys] == ["1", "2", "S1", "S2", "S3"]
            assert row_dict(lb, ids["c_base"])["diff"] == f"{40.39 - 44.26:+.2f}"
            assert row_dict(lb, ids["s_base"])["reference"] == "-"
            assert "crashed" in row_dict(lb, ids["s_crash"])["status"]
            # click the "config" header: sorted by config, groups never mixed
            x = sum(c.get_render_width(lb) for c in list(lb.columns.values())[:2]) + 2
            await pilot.click("#lb-table", offset=(x, 0))
            assert app.leaderboard_pane.sort == ("config", False)
            keys = [r.key.value for r in lb.ordered_rows]  # as listed
            assert keys[:2] == [ids["c_base"], ids["c_pre"]]
            assert set(keys[2:]) == {ids["s_base"], ids["s_stop"], ids["s_crash"]}
            assert keys[2:] == sorted(keys[2:], key=lambda k: row_dict(lb, k)["config"])
            assert "▲" in cell_text(lb.columns[next(c for c in lb.columns if c.value == "config")].label)
            await pilot.press("o")  # next column
            assert app.leaderboard_pane.sort[0] == "data"
            # compare two marked runs: overlaid curves + only the differing config keys
            app.leaderboard_pane.set_sort("best_acc", True)
            lb.move_cursor(row=0)
            await pilot.press("space", "down", "space", "c")  # space marks in place
            screen = app.screen
            assert isinstance(screen, CompareScreen)
            assert [r["run_id"] for r in screen.runs] == [ids["c_pre"], ids["c_base"]]
            diff_keys = [k for k, _ in screen.diff_rows]
            assert "model.pretrained" in diff_keys and "train.epochs" not in diff_keys
            assert dict(screen.diff_rows)["model.pretrained"] == [True, False]
            await pilot.press("escape")
            assert not isinstance(app.screen, CompareScreen)

    run(scenario())


def test_delete_asks_first_and_removes_everything(tmp_path):
    ws, ids = fake_workspace(tmp_path)
    rid = ids["s_stop"]

    async def scenario():
        app = CifarTUI(ws, max_parallel=1)
        async with app.run_test(size=SIZE) as pilot:
            await until_loaded(pilot, app)
            await pilot.press("2")
            runs = app.query_one("#runs-table", DataTable)
            runs.move_cursor(row=runs.get_row_index(rid))
            await pilot.press("d")
            assert isinstance(app.screen, ConfirmScreen)
            await pilot.press("n")
            assert (ws.home / rid).is_dir() and app.store.run(rid)
            await pilot.press("d")
            await pilot.press("y")
            await pilot.pause(0.2)
            assert not (ws.home / rid).exists()
            assert app.store.run(rid) is None and app.store.epochs(rid) == []
            assert rid not in {k.value for k in runs.rows}

    run(scenario())


@pytest.fixture
def live_fake_run(tmp_path):
    """A 'running' run whose process is a real, live process (it just sleeps and obeys SIGTERM)."""
    ws, ids = fake_workspace(tmp_path)
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
    rid = "resnet18_baseline-20260101T120000Z-11ff"
    run_dir = ws.home / rid
    run_dir.mkdir(parents=True)
    start = {"v": 1, "t": time.time(), "type": "start", "run_id": rid, "config_name": "resnet18_baseline",
             "config": {"name": "resnet18_baseline", "train": {"epochs": 5, "batch_size": 64},
                        "data": {"source": "synthetic"}},
             "device": "cpu", "data_source": "synthetic", "pid": proc.pid, "steps_per_epoch": 10}
    (run_dir / "events.jsonl").write_text(json.dumps(start) + "\n")
    store = ws.store()
    store.run_started(rid, config=start["config"], device="cpu", pid=proc.pid, run_dir=str(run_dir), epochs_total=5,
                      params=1, flops=None)
    store.close()
    yield ws, rid, proc
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(5)


def test_busy_slot_holds_queue_delete_refused_and_quit_stops(live_fake_run):
    ws, rid, proc = live_fake_run
    store = ws.store()
    item = store.enqueue("resnet18_baseline", ["data.source=synthetic"])
    store.close()

    async def scenario():
        app = CifarTUI(ws, max_parallel=1)
        async with app.run_test(size=SIZE) as pilot:
            await until_loaded(pilot, app)
            await pilot.pause(0.5)
            assert rid in app.views and app.views[rid].status == "running"  # re-attached
            await pilot.pause(1.2)  # a queue pump happened: the slot is busy, nothing starts
            assert app.sup.children == {} and [q["id"] for q in app.store.queued()] == [item]
            assert "1 run alive on this host, 1 at a time" in app.runs_pane.blocked  # the supervisor says why
            # delete is refused while the run is running
            await app.open_run(rid, True)
            await pilot.pause()  # the run view takes the focus
            assert footer_keys(app)["d"] is False  # shown disabled in the footer
            await pilot.press("d")
            assert not isinstance(app.screen, ConfirmScreen) and (ws.home / rid).is_dir()
            # the queued item is listed and can be cancelled
            await pilot.press("2")
            runs = app.query_one("#runs-table", DataTable)
            assert "queued" in cell_text(runs.get_row(f"queue:{item}")[0])
            runs.move_cursor(row=runs.get_row_index(f"queue:{item}"))
            await pilot.press("d")
            assert app.store.queued() == []
            # quitting asks; "stop them" sends the graceful stop signal
            await pilot.press("q")
            assert isinstance(app.screen, QuitScreen) and app.screen.live == [rid]
            await pilot.press("s")
        assert app.return_value == "stopped"

    run(scenario())
    proc.wait(10)
    assert proc.returncode == -signal.SIGTERM
    assert not pid_alive(proc.pid)


def test_queue_gives_each_run_its_own_gpu(tmp_path, monkeypatch):
    """With 2 GPUs, 2 runs at a time, each pinned to one GPU (CUDA_VISIBLE_DEVICES); the third
    queued run starts on the GPU that frees first. The engine is replaced by sleeping processes."""
    from cifar_tui.launch import Launched
    from cifar_tui.workspace import Workspace

    monkeypatch.setenv("CIFAR_TUI_GPUS", "0,1")
    monkeypatch.delenv("CIFAR_TUI_MAX_PARALLEL", raising=False)
    ws = Workspace(home=tmp_path / "runs", data_root=tmp_path / "data")
    started: list[tuple[str, dict]] = []
    procs: list[subprocess.Popen] = []

    def fake_launch(ws_, request, *, run_id, env=None, **kw):  # the supervisor's spawner calls cifar_tui.launch.launch
        rid = run_id
        run_dir = ws_.home / rid
        run_dir.mkdir(parents=True)
        proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
        procs.append(proc)
        started.append((rid, dict(env or {})))
        return Launched(rid, run_dir, proc)

    monkeypatch.setattr("cifar_tui.launch.launch", fake_launch)
    store = ws.store()
    for name in ("resnet18_baseline", "resnet18_baseline_wd01", "resnet18_baseline_lbsmooth"):
        store.enqueue(name, ["data.source=synthetic"])
    store.close()

    async def scenario():
        app = CifarTUI(ws)
        async with app.run_test(size=SIZE) as pilot:
            assert app.sup.max_parallel == 2
            deadline = time.monotonic() + 10
            while len(started) < 2 and time.monotonic() < deadline:
                await pilot.pause(0.1)
            await pilot.pause(1.5)
            assert len(started) == 2, started
            assert sorted(e["CUDA_VISIBLE_DEVICES"] for _, e in started) == ["0", "1"]
            assert [q["config"] for q in app.store.queued()] == ["resnet18_baseline_lbsmooth"]
            first_gpu = started[0][1]["CUDA_VISIBLE_DEVICES"]
            procs[0].terminate()
            procs[0].wait(5)
            deadline = time.monotonic() + 10
            while len(started) < 3 and time.monotonic() < deadline:
                await pilot.pause(0.1)
            assert len(started) == 3 and started[2][1]["CUDA_VISIBLE_DEVICES"] == first_gpu
            assert app.store.queued() == []
            await pilot.press("q")
            assert isinstance(app.screen, QuitScreen) and len(app.screen.live) == 2
            await pilot.press("s")

    try:
        run(scenario())
        for proc in procs:
            proc.wait(10)
        assert all(p.returncode is not None for p in procs)
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)


def test_ddp_runs_from_the_launch_form_get_several_gpus_and_resume_on_as_many(tmp_path, monkeypatch):
    """With 3 GPUs: a 2-process run from the form gets GPUs 0,1 and torchrun with 2 processes; a
    1-process run gets GPU 2; a second 2-process run waits in the queue (shown with its process
    count) until the first frees both its GPUs. More processes than GPUs is refused in the form.
    A stopped 2-process run resumes on 2 free GPUs. The engine is replaced by sleeping processes."""
    from cifar_tui.launch import Launched

    from tests.support.tui import fake_run

    monkeypatch.setenv("CIFAR_TUI_GPUS", "0,1,2")
    monkeypatch.delenv("CIFAR_TUI_MAX_PARALLEL", raising=False)
    (tmp_path / "runs").mkdir()
    stopped = fake_run(tmp_path / "runs", "resnet18_baseline", "0ddp", epochs=6, done=2, status="stopped")
    events_file = tmp_path / "runs" / stopped / "events.jsonl"
    lines = [json.loads(x) for x in events_file.read_text().splitlines()]
    lines[0].update(world_size=2, local_world_size=2, device="cuda:0 x2")
    events_file.write_text("".join(json.dumps(x) + "\n" for x in lines))
    ws, _ = fake_workspace(tmp_path)  # its store is rebuilt from every run dir, the stopped DDP run too
    started: list[dict] = []
    procs: list[subprocess.Popen] = []

    def sleeper(run_dir) -> subprocess.Popen:
        run_dir.mkdir(parents=True, exist_ok=True)
        proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
        procs.append(proc)
        return proc

    def fake_launch(ws_, request, *, run_id, env=None, nproc=1, **kw):
        rid = run_id
        started.append({"run": rid, "gpus": (env or {}).get("CUDA_VISIBLE_DEVICES"), "nproc": nproc})
        return Launched(rid, ws_.home / rid, sleeper(ws_.home / rid))

    def fake_resume(ws_, run_id, *, env=None, **kw):
        started.append({"run": run_id, "gpus": (env or {}).get("CUDA_VISIBLE_DEVICES"), "resumed": True})
        return Launched(run_id, ws_.home / run_id, sleeper(ws_.home / run_id))

    monkeypatch.setattr("cifar_tui.launch.launch", fake_launch)  # what the supervisor's spawner calls
    monkeypatch.setattr("cifar_tui.launch.resume", fake_resume)

    async def launch_from_form(pilot, app, nproc: str) -> LaunchScreen:
        await pilot.press("1", "l")
        form = app.screen
        assert isinstance(form, LaunchScreen)
        form.query_one("#f-nproc", Input).value = nproc
        await pilot.press("ctrl+s")
        return form

    async def until(pilot, cond, what: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not cond() and time.monotonic() < deadline:
            await pilot.pause(0.1)
        assert cond(), what

    async def scenario():
        app = CifarTUI(ws)
        async with app.run_test(size=SIZE) as pilot:
            await until_loaded(pilot, app)
            assert app.sup.max_parallel == 3
            form = await launch_from_form(pilot, app, "4")
            assert app.screen is form
            assert "4 GPUs, 3 are visible" in str(form.query_one("#form-error", Static).render())
            await pilot.press("escape")
            await launch_from_form(pilot, app, "2")
            await launch_from_form(pilot, app, "1")
            await launch_from_form(pilot, app, "2")
            await until(pilot, lambda: len(started) == 2, "two runs started")
            assert [(s["gpus"], s["nproc"]) for s in started] == [("0,1", 2), ("2", 1)]
            (waiting,) = app.store.queued()
            assert waiting["nproc"] == 2
            await pilot.press("2")
            runs = app.query_one("#runs-table", DataTable)
            assert row_dict(runs, f"queue:{waiting['id']}")["device"] == "2 procs"
            procs[0].terminate()
            procs[0].wait(5)
            await until(pilot, lambda: len(started) == 3, "the waiting 2-process run to start")
            assert (started[2]["gpus"], started[2]["nproc"]) == ("0,1", 2)
            assert app.store.queued() == []
            # the stopped 2-process run resumes (r in the Runs tab) on 2 GPUs again
            procs[1].terminate()
            procs[2].terminate()
            for p in procs[1:3]:
                p.wait(5)
            await until(pilot, lambda: not app.sup.children and not app.sup.leases.held(),
                        "the reap to give every GPU back")
            await pilot.press("2")
            runs.move_cursor(row=runs.get_row_index(stopped), animate=False)
            await pilot.press("r")
            await until(pilot, lambda: len(started) == 4, "the resume")
            assert started[3] == {"run": stopped, "gpus": "0,1", "resumed": True}
            procs[3].terminate()
            procs[3].wait(5)
            await until(pilot, lambda: not app.sup.children and not app.sup.leases.held(),
                        "the resumed run's GPUs to come back")

    try:
        run(scenario())
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
