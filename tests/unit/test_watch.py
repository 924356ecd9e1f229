"""Watching runs, in-process: watch.yaml settings, GPU telemetry through a fake NVML (the seam in
engine/telemetry.py), the heartbeat's telemetry and progress, notices and webhook delivery
(against a loopback server in this process), once-per-workspace alerts, wait's exit codes."""
from __future__ import annotations

import os
import sqlite3
import threading
import time
from types import SimpleNamespace

import pytest

from engine import telemetry
from engine.config import ConfigError
from engine.heartbeat import Heartbeat
from engine.notify import DELIVERY_BUDGET_S, Notice, claim, dispatch, notice_from_end, post_webhook
from engine.status import CRASHED, RUNNING, STALLED
from engine.store import Store
from engine.watch_config import (STALL_AFTER_DEFAULT_S, WatchSettings, load_watch_settings, parse_duration,
                                 watch_settings)

from tests.support.supervision import make_supervisor
from tests.support.webhook import Hook

CONFIG = {"name": "resnet18_baseline", "data": {"source": "synthetic"}}


@pytest.fixture
def hook():
    h = Hook()
    yield h
    h.close()


# ---------------------------------------------------------------- settings


def test_durations_read_like_people_write_them():
    assert [parse_duration(t, "x") for t in ("90", "90s", "10m", "1.5h", "2d", "off", 0, 45)] == \
        [90, 90, 600, 5400, 172800, 0, 0, 45]
    for bad in ("ten minutes", "-5m", "5y", True, -1):
        with pytest.raises(ConfigError, match=r"^--stall-after: expected a duration"):
            parse_duration(bad, "--stall-after")


def test_watch_yaml_then_the_environment_override_it(tmp_path):
    env: dict[str, str] = {}
    default = load_watch_settings(tmp_path, env)
    assert (default.notify_url, default.stall_after_s, default.desktop) == (None, STALL_AFTER_DEFAULT_S, True)
    assert default.notifies("failed") and default.notifies("stalled") and not default.notifies("pruned")
    (tmp_path / "watch.yaml").write_text("notify:\n  url: https://hooks.example/abc\n  statuses: [failed, pruned]\n"
                                         "  desktop: false\nstall_after: 90s\n")
    s = load_watch_settings(tmp_path, env)
    assert (s.notify_url, s.stall_after_s, s.desktop) == ("https://hooks.example/abc", 90, False)
    assert s.notifies("pruned") and not s.notifies("completed")
    env = {"CIFAR_TUI_NOTIFY_URL": "http://127.0.0.1:9/x", "CIFAR_TUI_STALL_AFTER_S": "off"}
    s = load_watch_settings(tmp_path, env)
    assert (s.notify_url, s.stall_after_s) == ("http://127.0.0.1:9/x", None)


@pytest.mark.parametrize("text, message", [
    ("notify:\n  urll: http://x\n", r"watch.yaml: notify.urll: unknown key"),
    ("notify:\n  url: ftp://x\n", r"watch.yaml: notify.url: expected an http:// or https:// URL"),
    ("notify:\n  statuses: [done]\n", r"watch.yaml: notify.statuses.0: "),
    ("stall_after: soon\n", r"watch.yaml: stall_after: expected a duration"),
    ("- a list\n", r"watch.yaml: expected a mapping"),
    ("notify: [\n", r"watch.yaml: invalid YAML"),
])
def test_a_bad_watch_yaml_is_named_by_file_and_key(tmp_path, text, message):
    (tmp_path / "watch.yaml").write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_watch_settings(tmp_path, {})
    assert watch_settings(tmp_path) == WatchSettings()  # readers and the engine carry on with the defaults


def test_a_bad_variable_is_named(tmp_path):
    with pytest.raises(ConfigError, match="^CIFAR_TUI_NOTIFY_URL: expected an http"):
        load_watch_settings(tmp_path, {"CIFAR_TUI_NOTIFY_URL": "hooks.example/abc"})
    with pytest.raises(ConfigError, match="^CIFAR_TUI_STALL_AFTER_S: expected a duration"):
        load_watch_settings(tmp_path, {"CIFAR_TUI_STALL_AFTER_S": "soon"})


def test_the_store_applies_the_workspace_threshold_unless_told(tmp_path, monkeypatch):
    monkeypatch.delenv("CIFAR_TUI_STALL_AFTER_S", raising=False)
    store = Store(tmp_path)
    store.run_started("r1", config=CONFIG, device="cpu", pid=os.getpid(), run_dir=str(tmp_path / "r1"),
                      epochs_total=2, params=1, flops=None)
    store.heartbeat("r1", 1.0, progress_at=time.time() - 120)  # beating, no step for 2 minutes
    assert store.run("r1")["status"] == RUNNING                  # default: 10 minutes
    assert store.run("r1", stall_after_s=60)["status"] == STALLED
    (tmp_path / "watch.yaml").write_text("stall_after: 1m\n")
    assert store.run("r1")["status"] == STALLED and store.runs()[0]["status"] == STALLED
    assert store.run("r1", stall_after_s=0)["status"] == RUNNING  # 0: never
    store.close()


# ---------------------------------------------------------------- telemetry (fake NVML)


class NVMLError(Exception):
    pass


class FakeNvml:
    """pynvml's API as telemetry.py uses it: two GPUs; GPU 1 does not report power; names as bytes
    (older pynvml) on GPU 0; utilisation readings come from a per-GPU list."""
    NVML_TEMPERATURE_GPU = 0

    def __init__(self, fail_init: bool = False):
        self.fail_init = fail_init
        self.util = {0: [90.0, 70.0, 50.0], 1: [3.0]}
        self.uuids = {0: "GPU-aaaa-0000", 1: "GPU-bbbb-1111"}

    def nvmlInit(self):
        if self.fail_init:
            raise NVMLError("NVML Shared Library Not Found")

    def nvmlDeviceGetCount(self):
        return 2

    def nvmlDeviceGetHandleByIndex(self, i):
        if i not in (0, 1):
            raise NVMLError("Invalid Argument")
        return SimpleNamespace(i=i)

    def nvmlDeviceGetHandleByUUID(self, uuid):
        for i, u in self.uuids.items():
            if u == uuid:
                return SimpleNamespace(i=i)
        raise NVMLError("Not Found")

    def nvmlDeviceGetIndex(self, h):
        return h.i

    def nvmlDeviceGetName(self, h):
        return b"NVIDIA H100 80GB HBM3" if h.i == 0 else "NVIDIA A100-SXM4-40GB"

    def nvmlDeviceGetUtilizationRates(self, h):
        values = self.util[h.i]
        return SimpleNamespace(gpu=values.pop(0) if len(values) > 1 else values[0], memory=10)

    def nvmlDeviceGetMemoryInfo(self, h):
        return SimpleNamespace(used=(h.i + 1) * 1024 ** 3, total=80 * 1024 ** 3, free=0)

    def nvmlDeviceGetTemperature(self, h, sensor):
        assert sensor == self.NVML_TEMPERATURE_GPU
        return 60 + h.i

    def nvmlDeviceGetPowerUsage(self, h):
        if h.i == 1:
            raise NVMLError("Not Supported")
        return 402_345  # milliwatts


@pytest.fixture
def fake_nvml():
    nv = FakeNvml()
    telemetry.set_nvml_module(nv)
    yield nv
    telemetry.set_nvml_module(None)


def test_machine_gpus_reads_every_gpu_in_plain_units(fake_nvml):
    gpus = telemetry.machine_gpus()
    assert gpus == [
        {"index": 0, "name": "NVIDIA H100 80GB HBM3", "util": 90.0, "mem_used_mb": 1024.0, "mem_total_mb": 81920.0,
         "temp_c": 60, "power_w": 402.3},
        {"index": 1, "name": "NVIDIA A100-SXM4-40GB", "util": 3.0, "mem_used_mb": 2048.0, "mem_total_mb": 81920.0,
         "temp_c": 61, "power_w": None},  # not supported on this board: null, the rest still read
    ]


def test_a_runs_gpus_by_uuid_with_utilisation_averaged_between_beats(fake_nvml):
    sampler = telemetry.GpuSampler(["aaaa-0000"])  # torch's form of a UUID (no GPU- prefix)
    assert sampler.active
    sampler.sample_util()
    sampler.sample_util()  # 90, 70: the heartbeat samples once a second
    (reading,) = sampler.read()
    assert reading["index"] == 0 and reading["util"] == 80.0 and reading["mem_used_mb"] == 1024.0
    assert telemetry.GpuSampler(["GPU-bbbb-1111", 7]).read()[0]["index"] == 1  # an unknown device is left out
    # torch's UUID first, then the index CUDA_VISIBLE_DEVICES gave (a UUID NVML does not know: MIG, say)
    assert [g["index"] for g in telemetry.GpuSampler([("MIG-cccc", 1), ("aaaa-0000", 1)]).read()] == [1, 0]


def test_no_nvml_means_no_gpu_fields_and_no_error():
    telemetry.set_nvml_module(FakeNvml(fail_init=True))
    try:
        assert telemetry.machine_gpus() == []
        assert not telemetry.GpuSampler([0]).active
        assert telemetry.ProcessSampler(telemetry.GpuSampler([0])).sample()["gpus"] is None
    finally:
        telemetry.set_nvml_module(None)


def test_the_real_pynvml_on_a_machine_without_a_gpu_gives_an_empty_list():
    telemetry.set_nvml_module(None)
    if telemetry.nvml() is not None:
        pytest.skip("this machine has an NVIDIA driver")
    assert telemetry.machine_gpus() == []


def test_cuda_visible_devices_names_nvml_devices():
    assert telemetry.nvml_indices_from_env(2, {}) == [0, 1]
    assert telemetry.nvml_indices_from_env(2, {"CUDA_VISIBLE_DEVICES": "3,1"}) == [3, 1]
    assert telemetry.nvml_indices_from_env(1, {"CUDA_VISIBLE_DEVICES": "GPU-ab12"}) == ["GPU-ab12"]


def test_process_telemetry_on_the_cpu():
    sampler = telemetry.ProcessSampler()
    sum(i * i for i in range(300_000))  # some CPU between the two samples
    sample = sampler.sample()
    assert sample["gpus"] is None
    assert isinstance(sample["cpu_percent"], float) and sample["cpu_percent"] >= 0
    assert 10 < sample["rss_mb"] < 100_000


def test_the_heartbeat_carries_telemetry_and_the_last_step_and_keeps_the_store_fresh(tmp_path):
    store = Store(tmp_path)
    store.run_started("r1", config=CONFIG, device="cpu", pid=os.getpid(), run_dir=str(tmp_path / "r1"),
                      epochs_total=2, params=1, flops=None)
    events: list[tuple[str, dict]] = []
    last_step = time.time() - 30  # the loop has been stuck for 30 s
    beat = Heartbeat(lambda kind, **fields: events.append((kind, fields)), lambda: Store(tmp_path), "r1",
                     lambda: 12.5, progress_at=lambda: last_step, interval_s=0.05)
    beat.start()
    deadline = time.monotonic() + 10
    while len(events) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    beat.stop_event.set()
    beat.join(5)
    assert not beat.is_alive()
    kind, fields = events[0]
    assert kind == "heartbeat" and fields["progress_t"] == round(last_step, 3)
    assert set(fields["telemetry"]) == {"cpu_percent", "rss_mb", "gpus"} and fields["telemetry"]["gpus"] is None
    row = store.run("r1", stall_after_s=20)
    assert row["progress_at"] == pytest.approx(last_step) and row["wall_s"] == 12.5
    assert row["heartbeat_at"] > last_step + 25 and row["status"] == STALLED
    store.close()


# ---------------------------------------------------------------- notices and delivery


def test_a_notice_carries_what_a_webhook_needs():
    n = Notice("resnet18_baseline-20260101T000000Z-ab12", "failed", "resnet18_baseline", 44.126, host="gpu-box",
               error="out of memory", epochs_done=3, epochs_total=200)
    body = n.payload()
    assert {k: body[k] for k in ("run_id", "status", "best_acc", "config_name", "host", "event")} == {
        "run_id": n.run_id, "status": "failed", "best_acc": 44.126, "config_name": "resnet18_baseline",
        "host": "gpu-box", "event": "run_end"}
    assert body["text"] == ("cifar-tui on gpu-box: resnet18_baseline failed: resnet18_baseline-20260101T000000Z-ab12; "
                            "best 44.13%; epoch 3/200; out of memory")
    assert n.severity == "error" and Notice("x", "stalled").payload()["event"] == "run_alert"
    end = notice_from_end({"run_id": "r", "status": "completed", "best_acc": 50.0, "epochs_done": 2},
                          {"config_name": "c", "host": "h", "config": {"train": {"epochs": 2}}})
    assert (end.config_name, end.host, end.epochs_total, end.severity) == ("c", "h", 2, "information")


def test_a_webhook_is_retried_on_a_server_error_and_not_on_a_refusal(hook):
    assert post_webhook(hook.url("/flaky"), {"a": 1}, deadline=time.monotonic() + 4)
    assert [p["body"] for p in hook.received("/flaky")] == [{"a": 1}, {"a": 1}]  # 503, then delivered
    assert hook.received("/flaky")[0]["content_type"] == "application/json"
    lines: list[str] = []
    assert not post_webhook(hook.url("/gone"), {}, deadline=time.monotonic() + 4, log=lines.append)
    assert len(hook.received("/gone")) == 1 and "HTTP 404; not retried" in lines[0]


class FakeClock:
    """engine.notify's clock: urlopen and sleep take their time from it, not from the machine."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.waits: list[tuple[str, float, float]] = []  # (what, started at, for how long)

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.waits.append(("sleep", self.now, seconds))
        self.now += seconds

    def hanging_urlopen(self, request, timeout=None, **kwargs):  # a server that never answers
        self.waits.append(("urlopen", self.now, timeout))
        self.now += timeout
        raise TimeoutError("timed out")

    def __getattr__(self, name):  # the rest of the time module
        return getattr(time, name)


def test_a_hanging_webhook_costs_no_more_than_its_deadline(hook, monkeypatch):
    """Retries and their pauses end by the deadline: measured on engine.notify's own clock (each
    attempt lasts its whole timeout), so a loaded machine cannot make it pass or fail."""
    import urllib.request

    import engine.notify

    clock = FakeClock()
    monkeypatch.setattr(engine.notify, "time", clock)
    monkeypatch.setattr(urllib.request, "urlopen", clock.hanging_urlopen)
    lines: list[str] = []
    start = clock.now
    assert not post_webhook(hook.url("/hang"), {}, deadline=start + DELIVERY_BUDGET_S, log=lines.append)
    assert "not delivered" in lines[0]
    assert all(began + took <= start + DELIVERY_BUDGET_S for _, began, took in clock.waits), clock.waits
    assert [w[0] for w in clock.waits].count("urlopen") >= 2  # it did retry within the budget
    assert clock.now - start <= DELIVERY_BUDGET_S
    monkeypatch.undo()

    # the real thing: urllib's timeouts against the loopback server that never answers
    lines.clear()
    assert not post_webhook(hook.url("/hang"), {}, deadline=time.monotonic() + 1.0, log=lines.append)
    assert "not delivered" in lines[0] and len(hook.received("/hang")) >= 1


def test_a_notice_is_sent_from_a_background_thread_that_the_caller_waits_for_within_the_budget(monkeypatch):
    import engine.notify

    release, sent = threading.Event(), []

    def blocked_post(url, body, *, deadline, log):  # holds the delivery until the test lets it go
        release.wait(60)
        sent.append(body["status"])
        return True

    monkeypatch.setattr(engine.notify, "post_webhook", blocked_post)
    settings = WatchSettings(notify_url="http://127.0.0.1:9/x", desktop=False)
    delivery = dispatch(Notice("r", "completed"), settings)
    assert delivery.is_alive() and sent == []  # dispatch returned while the POST is still on its way
    release.set()
    assert delivery.wait().webhook_ok is True and sent == ["completed"]
    assert dispatch(Notice("r", "pruned"), settings) is None  # not asked for

    release.clear()
    monkeypatch.setattr(engine.notify, "DELIVERY_BUDGET_S", 0.2)
    stuck = dispatch(Notice("r", "failed"), settings)
    assert stuck.wait() is stuck and stuck.is_alive()  # wait() gave up at the budget; the POST is still held
    release.set()
    stuck.join(30)


def test_each_notice_is_claimed_once_per_workspace(tmp_path):
    a, b = (sqlite3.connect(tmp_path / "db", isolation_level=None) for _ in range(2))
    assert claim(a, "r1", "stalled", 100.0) and not claim(b, "r1", "stalled", 100.0)
    assert claim(b, "r1", "stalled", 250.0)  # a second stall after progress is news again
    assert claim(b, "r1", "crashed", 1.0)


def test_alerts_report_a_stall_once_and_send_it_once(tmp_path, hook, monkeypatch):
    monkeypatch.setenv("CIFAR_TUI_NOTIFY_URL", hook.url("/ok"))
    sup, _ = make_supervisor(tmp_path, gpus=())
    store = sup.store
    now = time.time()
    store.run_started("stuck", config=CONFIG, device="cpu", pid=os.getpid(), run_dir="d", epochs_total=2, params=1,
                      flops=None)
    store.heartbeat("stuck", 1.0, progress_at=now - 700)  # alive, beating, no step for > 10 minutes
    for rid, beat in (("gone-now", now - 100), ("gone-long-ago", now - 7200)):  # dead pid, silent: crashed
        store.run_started(rid, config=CONFIG, device="cpu", pid=2 ** 22 + 12345, run_dir="d", epochs_total=2,
                          params=1, flops=None)
        store.conn.execute("UPDATE runs SET heartbeat_at=?, started_at=? WHERE run_id=?", (beat, beat, rid))
    notices = sup.alerts()
    assert sorted((n.run_id, n.status) for n in notices) == [("gone-now", CRASHED), ("stuck", STALLED)]
    stalled = next(n for n in notices if n.status == STALLED)
    assert stalled.detail.startswith("alive but no step for 11.7 min") and stalled.severity == "warning"
    assert sup.alerts() == []                      # this supervisor reported them
    other, _ = make_supervisor(tmp_path, gpus=())  # another TUI: shows them too, sends nothing
    assert len(other.alerts()) == 2
    sup.close()
    other.close()
    assert sorted(p["body"]["run_id"] for p in hook.received("/ok")) == ["gone-now", "stuck"]


def test_wait_exit_codes():
    from cifar_tui.commands.watch import wait_exit_code

    assert wait_exit_code(["completed", "pruned"]) == 0
    assert wait_exit_code(["completed", "stopped"]) == 3
    assert wait_exit_code(["stopped", "crashed"]) == 1 and wait_exit_code(["failed"]) == 1


def test_loopback_addresses():
    from cifar_tui.serve import is_loopback

    assert all(is_loopback(h) for h in ("127.0.0.1", "127.1.2.3", "localhost", "::1", "[::1]", "LOCALHOST"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "192.168.1.5", "example.com", ""))


def test_a_dead_dataloader_worker_is_named_as_such():
    from engine.dataloader_failure import dataloader_failure

    killed = dataloader_failure(RuntimeError("DataLoader worker (pid 4242) is killed by signal: Killed. "))
    assert killed.startswith("a DataLoader worker of the augmentation pipeline died (DataLoader worker (pid 4242) is "
                             "killed by signal: Killed.); see dmesg") and "--set data.num_workers=N" in killed
    # the worker died while handing a batch over: the lost connection surfaces inside torch's DataLoader
    code = compile("def get():\n    raise ConnectionResetError(104, 'Connection reset by peer')\n",
                   "/venv/site-packages/torch/utils/data/dataloader.py", "exec")
    scope: dict = {}
    exec(code, scope)  # noqa: S102 - a function whose frame carries the DataLoader's file name
    try:
        scope["get"]()
    except ConnectionResetError as exc:
        lost = dataloader_failure(exc)
    assert lost.startswith("a DataLoader worker of the augmentation pipeline died (lost the connection to it: "
                           "ConnectionResetError: [Errno 104] Connection reset by peer)")
    assert dataloader_failure(ConnectionResetError(104, "reset")) is None  # not from the DataLoader: a webhook, say
    assert dataloader_failure(RuntimeError("Caught ValueError in DataLoader worker process 0.")) is None



def test_a_runs_gpus_are_named_by_uuid_then_by_visible_index(monkeypatch):
    import torch

    from engine.heartbeat import peak_memory, run_gpu_devices

    uuids = {0: "aaaa-0000", 1: "bbbb-1111"}
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: SimpleNamespace(uuid=uuids[i]))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert run_gpu_devices(torch.device("cuda", 1)) == [("bbbb-1111", 5)]
    assert run_gpu_devices(torch.device("cuda", 0), local_processes=2) == [("aaaa-0000", 3), ("bbbb-1111", 5)]
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: SimpleNamespace(uuid=None))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert run_gpu_devices(torch.device("cuda", 1)) == [(1,)]
    assert run_gpu_devices(torch.device("cpu")) == [] and peak_memory(torch.device("cpu")) == {}
