"""`cifar-tui data download|verify|synth` as a user runs them."""
from __future__ import annotations

import json
import socket

from tests.conftest import cli, set_args, tiny_overrides


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_download_without_network_fails_fast_and_says_where_to_put_the_archive(workspace):
    """Fast: it ends on the refused connection, not on a timeout or after retries (the message says
    which; tests/unit/test_data.py times the same call against its own timeout)."""
    res = cli(workspace, "data", "download", "--url", f"http://127.0.0.1:{_closed_port()}/cifar-100-python.tar.gz")
    assert res.returncode == 2, res.stdout + res.stderr
    assert "refused" in res.stderr.lower() and "timed out" not in res.stderr.lower(), res.stderr
    assert "cifar-100-python.tar.gz" in res.stderr and "by hand" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr


def test_verify_missing_data_exits_2(workspace):
    res = cli(workspace, "data", "verify")
    assert res.returncode == 2 and "cifar-tui data download" in res.stderr


def test_synth_writes_a_set_that_training_uses(workspace):
    res = cli(workspace, "data", "synth", "--seed", "7")
    assert res.returncode == 0, res.stderr
    folder = workspace["data"] / "synthetic-100-python"
    assert {p.name for p in folder.iterdir()} >= {"train", "test", "meta"}
    run = ["run", "resnet18_baseline", "--json", *set_args(tiny_overrides(model__backbone="test_resnet", train__epochs=1))]
    trained = cli(workspace, *run)
    assert trained.returncode == 0, trained.stderr
    start = json.loads(trained.stdout.splitlines()[0])
    assert start["data_source"] == "synthetic" and (start["num_train"], start["num_test"]) == (256, 128)
    # the run read those files: with one of them damaged, it is refused naming it
    train = folder / "train"
    train.write_bytes(train.read_bytes()[: train.stat().st_size // 2])
    refused = cli(workspace, *run)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert str(train) in refused.stderr and "cifar-tui data synth" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
