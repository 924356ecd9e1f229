"""The test suite itself runs offline (tests/support/hygiene.py): nothing a test does, in this
process or in the processes it starts, can download weights or reach beyond this machine,
even on a machine with internet access."""
from __future__ import annotations

import os
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from engine.config import ModelConfig
from engine.models import WeightsError, build_model

from tests.support.hygiene import CLOSED_PROXY, NetworkBlocked


def test_the_environment_every_test_and_process_inherits_is_offline():
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    for var in ("HF_HOME", "HF_HUB_CACHE", "TORCH_HOME"):  # an empty folder of this session, not the user's cache
        path = Path(os.environ[var])
        assert "cifar-tui-tests-offline-" in str(path) and not any(path.rglob("*.safetensors")), var
    proxies = urllib.request.getproxies()
    assert proxies["https"] == proxies["http"] == CLOSED_PROXY
    assert urllib.request.proxy_bypass("127.0.0.1") and not urllib.request.proxy_bypass("download.pytorch.org")


def test_a_download_through_urllib_is_refused_at_once():
    timeout = 120.0  # refused, not timed out: it ends long before its timeout, however busy the machine
    t0 = time.monotonic()
    with pytest.raises(urllib.error.URLError) as info:  # torch.hub and the data download use urllib
        urllib.request.urlopen("https://download.pytorch.org/models/resnet18-f37072fd.pth", timeout=timeout)
    assert "refused" in str(info.value).lower() and time.monotonic() - t0 < timeout / 2


def test_the_hub_client_refuses_without_touching_the_network(monkeypatch):
    from huggingface_hub import hf_hub_download

    def no_socket(*args, **kwargs):
        raise AssertionError("the hub client opened a connection")

    slept: list[float] = []  # the hub client's retries wait between attempts: none may happen
    monkeypatch.setattr(socket.socket, "connect", no_socket)
    monkeypatch.setattr(time, "sleep", slept.append)
    with pytest.raises(Exception) as info:
        hf_hub_download("timm/resnet18.a1_in1k", "model.safetensors")
    import huggingface_hub.constants

    assert huggingface_hub.constants.HF_HUB_OFFLINE is True
    assert type(info.value).__name__ == "LocalEntryNotFoundError", info.value  # cache only: not found
    assert slept == []


def test_pretrained_weights_are_refused_without_a_probe_when_the_hub_is_off(monkeypatch):
    probes = []
    slept: list[float] = []
    monkeypatch.setattr("engine.models.socket.create_connection", lambda *a, **k: probes.append(a))
    monkeypatch.setattr(time, "sleep", slept.append)
    with pytest.raises(WeightsError) as info:
        build_model(ModelConfig(backbone="resnet18", pretrained=True))
    assert "HF_HUB_OFFLINE" in str(info.value) and "model.weights" in str(info.value)
    assert probes == [] and slept == []  # refused without a probe and without waiting for anything


def test_sockets_of_this_process_reach_loopback_only():
    with pytest.raises(socket.gaierror, match="blocked by the test suite"):
        socket.create_connection(("huggingface.co", 443), timeout=3)
    with pytest.raises(NetworkBlocked):
        socket.create_connection(("1.1.1.1", 443), timeout=3)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        with socket.create_connection(server.getsockname(), timeout=3):
            pass


def test_the_processes_the_suite_starts_meet_ctrl_c_as_from_a_terminal():
    """Started in the background of a script, the suite inherits SIGINT ignored; tests/conftest.py
    restores the handler, so a CLI or engine it starts turns Ctrl-C into KeyboardInterrupt."""
    import signal
    import subprocess
    import sys

    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    res = subprocess.run([sys.executable, "-c", "import signal; print(signal.getsignal(signal.SIGINT).__name__)"],
                         capture_output=True, text=True, timeout=60)
    assert res.stdout.strip() == "default_int_handler", res.stdout + res.stderr
