"""The GPU paths that need processes or the driver: a 1-process NCCL DDP step through the engine's
own Trainer (and gpu-check's NCCL probe), GPU telemetry through the real NVML, and GPU leases
with two real GPUs (where the machine has two)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest
import torch

from engine.events import read_events

from tests.conftest import ROOT, cli, set_args, tiny_overrides

pytestmark = pytest.mark.gpu

# Under torchrun with one process: the engine's DDP path (DistInfo.enabled is world_size > 1, so
# this forces it) with NCCL, DistributedDataParallel, the all-reduced sums and stop agreement.
DDP_ONE_RANK = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import torch.distributed as dist
    from engine.config import load_config
    from engine.ddp import DistInfo
    from engine.events import read_events
    from engine.trainer import Trainer

    class OneRankDDP(DistInfo):
        @property
        def enabled(self):
            return True

    home = Path(sys.argv[1])
    dist.init_process_group(backend="nccl")
    cfg = load_config("resnet18_baseline", sys.argv[2:])
    trainer = Trainer(cfg, run_id="nccl", home=home, data_root=home, info=OneRankDDP())
    trainer.prepare()
    code = trainer.run()
    out = {"code": code, "backend": dist.get_backend(), "ddp": type(trainer.forward_model).__name__,
           "events": [e["type"] for e in read_events(home / "nccl" / "events.jsonl")]}
    dist.destroy_process_group()
    print("RESULT " + json.dumps(out), flush=True)
""")


def test_one_nccl_process_trains_a_ddp_step_through_the_engine(tmp_path):
    overrides = ["data.source=synthetic", "data.train_limit=128", "data.test_limit=64", "train.batch_size=32",
                 "train.device=cuda", "train.epochs=1", "model.backbone=test_resnet"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    script = tmp_path / "ddp_one_rank.py"
    script.write_text(DDP_ONE_RANK)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=1",
                           str(script), str(tmp_path), *overrides],
                          capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, (proc.stdout + proc.stderr)[-3000:]
    result = json.loads(lines[0][len("RESULT "):])
    assert result["code"] == 0 and result["backend"] == "nccl" and result["ddp"] == "DistributedDataParallel"
    assert result["events"][0] == "start" and result["events"][-1] == "end" and "epoch" in result["events"]


def test_gpu_checks_nccl_probe_passes():
    from cifar_tui.gpu_check import run_nccl_probe

    result = run_nccl_probe(timeout=300)
    assert result.get("ok") is True, result
    assert result["backend"] == "nccl" and result["all_reduce_ok"] and result["loss_finite"]


def test_gpu_telemetry_reads_the_real_gpus_through_nvml(tmp_path):
    import pynvml

    from engine import telemetry
    from engine.heartbeat import Heartbeat, run_gpu_devices

    telemetry.set_nvml_module(None)  # the real pynvml, whatever an earlier test set
    gpus = telemetry.machine_gpus()
    pynvml.nvmlInit()
    try:
        count = pynvml.nvmlDeviceGetCount()
        names = [pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(i)) for i in range(count)]
    finally:
        pynvml.nvmlShutdown()
    names = [n.decode() if isinstance(n, bytes) else n for n in names]
    assert [g["index"] for g in gpus] == list(range(count)) and [g["name"] for g in gpus] == names
    for g in gpus:
        assert g["mem_total_mb"] > 1000 and 0 <= g["mem_used_mb"] <= g["mem_total_mb"] and 0 <= g["util"] <= 100

    # a heartbeat of a run on cuda:0 carries that GPU, busy, with the memory this process holds
    beats: list[dict] = []

    class Store:
        def heartbeat(self, *args, **kwargs):
            pass

        def close(self):
            pass

    device = torch.device("cuda", 0)
    held = torch.empty(256 * 2**20, dtype=torch.uint8, device=device)  # 256 MiB
    beat = Heartbeat(lambda kind, **fields: beats.append(fields), Store, "r", time.monotonic,
                     gpus=run_gpu_devices(device), interval_s=1.5)
    stop = threading.Event()

    def busy() -> None:
        a = torch.randn(2048, 2048, device=device)
        while not stop.is_set():
            a = (a @ a).tanh_()
        torch.cuda.synchronize(device)

    worker = threading.Thread(target=busy, daemon=True)
    worker.start()
    beat.start()
    try:
        deadline = time.monotonic() + 60
        while len(beats) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        beat.stop_event.set()
        beat.join(10)
        stop.set()
        worker.join(30)
    assert len(beats) >= 2, beats
    (reading,) = beats[-1]["telemetry"]["gpus"]
    assert reading["name"] == torch.cuda.get_device_name(device)
    assert reading["mem_used_mb"] >= held.numel() / 2**20
    assert reading["util"] is not None and reading["util"] > 0  # averaged over the samples of a busy GPU
    del held


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="GPU leases with real GPUs need two")
def test_two_runs_side_by_side_lease_one_real_gpu_each(workspace):
    """`cifar-tui run A B --parallel` with the GPUs nvidia-smi lists (no simulation): the two
    engines run at once, each on its own GPU (CUDA_VISIBLE_DEVICES from its lease), and both
    leases are released at the end."""
    import sqlite3

    env = {k: v for k, v in workspace["env"].items() if k not in ("CIFAR_TUI_GPUS", "CUDA_VISIBLE_DEVICES")}
    overrides = tiny_overrides(data__train_limit=512, train__device="cuda", train__epochs=2,
                               model__backbone="test_resnet")
    res = cli({**workspace, "env": env}, "run", "resnet18_baseline", "resnet18_baseline", "--parallel",
              *set_args(overrides))
    assert res.returncode == 0, res.stdout + res.stderr
    starts = [next(e for e in read_events(p) if e["type"] == "start") for p in workspace["home"].glob("*/events.jsonl")]
    assert len(starts) == 2 and len({s["visible_devices"] for s in starts}) == 2, starts
    assert all(s["device"].startswith("cuda") for s in starts)
    db = sqlite3.connect(workspace["home"] / "cifar_tui.db")
    log = db.execute("SELECT slot, run_id, released_at FROM lease_log").fetchall()
    db.close()
    assert len({slot for slot, _, _ in log}) == 2 and all(released for _, _, released in log), log
