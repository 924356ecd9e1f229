"""scripts/gpu-check.sh end to end on the CPU (a smoke run: the real script, the engine's Trainer,
a KD teacher made on the fly), the way it runs on a GPU machine with --device cuda."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import ROOT


def test_gpu_check_smoke_run_on_cpu(tmp_path):
    out = tmp_path / "check.json"
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [str(ROOT / "scripts" / "gpu-check.sh"), "--device", "cpu", "--configs", "resnet18_baseline", "resnet18_fast",
         "--compile", "off", "--skip", "nccl", "bench", "--steps", "2", "--set", "train.batch_size=8",
         "--json", str(out)],
        capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(out.read_text())
    rows = {m["config"]: m for m in results["configs"]}
    assert set(rows) == {"resnet18_baseline", "resnet18_fast"}
    for m in rows.values():
        assert m["error"] is None and m["steps"] >= 2 and m["img_per_s"] > 0 and m["batch"] == 8
    assert "gpu-check on cpu" in proc.stdout and "resnet18_fast" in proc.stdout


def _script_calls(tmp_path, *args: str) -> list[str]:
    """What scripts/gpu-check.sh runs, with a stand-in Python that records each call (and its
    CIFAR_TUI_REQUIRE_GPU) instead of running it."""
    log = tmp_path / "calls"
    fake = tmp_path / "python"
    fake.write_text(f'#!/bin/sh\necho "REQUIRE=${{CIFAR_TUI_REQUIRE_GPU:-}} $*" >> {log}\n')
    fake.chmod(0o755)
    proc = subprocess.run([str(ROOT / "scripts" / "gpu-check.sh"), *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHON": str(fake)}, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    return log.read_text().splitlines()


def test_gpu_check_then_runs_the_gpu_suite_on_cuda_only(tmp_path):
    calls = _script_calls(tmp_path, "--configs", "resnet18_fast")
    assert calls[0] == "REQUIRE= -m cifar_tui.gpu_check --configs resnet18_fast"
    assert calls[1].startswith("REQUIRE=1 -m pytest") and calls[1].endswith("-m gpu tests/gpu") and len(calls) == 2
    for args in (["--device", "cpu"], ["--device=cpu"], ["--dry-run"], ["--help"], ["--no-tests"]):
        (tmp_path / "calls").unlink()
        calls = _script_calls(tmp_path, *args)
        assert calls == [f"REQUIRE= -m cifar_tui.gpu_check {' '.join(a for a in args if a != '--no-tests')}".rstrip()]
