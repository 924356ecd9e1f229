"""`cifar-tui data download|verify|synth` as a user runs them."""
from __future__ import annotations

import socket
import time

from tests.conftest import cli


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_download_without_network_fails_fast_and_says_where_to_put_the_archive(workspace):
    t0 = time.monotonic()
    res = cli(workspace, "data", "download", "--url", f"http://127.0.0.1:{_closed_port()}/cifar-100-python.tar.gz")
    assert res.returncode == 2, res.stdout + res.stderr
    assert time.monotonic() - t0 < 30
    assert "cifar-100-python.tar.gz" in res.stderr and "by hand" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr


def test_verify_missing_data_exits_2(workspace):
    res = cli(workspace, "data", "verify")
    assert res.returncode == 2 and "cifar-tui data download" in res.stderr


def test_synth_writes_a_set_that_training_uses(workspace):
    res = cli(workspace, "data", "synth")
    assert res.returncode == 0, res.stderr
    folder = workspace["data"] / "synthetic-100-python"
    assert {p.name for p in folder.iterdir()} >= {"train", "test", "meta"}
