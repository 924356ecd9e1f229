"""The GPU suite: tests marked `gpu` that run the CUDA paths for real (`make test-gpu`, and
scripts/gpu-check.sh after its check). Without a CUDA device they are skipped, and the skip
says why; with CIFAR_TUI_REQUIRE_GPU=1 (make test-gpu sets it) that is a failure instead, so a
GPU machine whose CUDA is broken cannot pass the GPU suite by skipping it."""
from __future__ import annotations

import os

import pytest  # noqa: E402
import torch  # noqa: E402

if torch.cuda.is_available():  # cuBLAS is deterministic only with a fixed workspace, set before it starts
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

from engine.checkpoint import load_checkpoint  # noqa: E402
from engine.config import load_config  # noqa: E402
from engine.events import read_events  # noqa: E402
from engine.trainer import Trainer  # noqa: E402

from tests.conftest import CONFIGS  # noqa: E402

REQUIRE_ENV = "CIFAR_TUI_REQUIRE_GPU"
# The suite's own check where there is no GPU: CIFAR_TUI_GPU_SUITE_DEVICE=cpu runs its code on the
# CPU (what compares the GPU with the CPU then compares the CPU with itself; the CUDA-only checks fail).
DEVICE = torch.device(os.environ.get("CIFAR_TUI_GPU_SUITE_DEVICE", "cuda"))
NO_CUDA = ("no CUDA device (torch.cuda.is_available() is False): the GPU suite runs on a machine with an "
           "NVIDIA GPU, with `make test-gpu` or scripts/gpu-check.sh")

# Tiny runs on the GPU: timm's test_resnet where the model does not matter.
GPU_TINY = ["data.source=synthetic", "data.train_limit=256", "data.test_limit=64", "train.batch_size=64",
            f"train.device={DEVICE.type}", "train.epochs=1", "model.backbone=test_resnet", "data.augment=crop_flip",
            "data.shuffle=true", "train.keep=best+last"]


def cuda_available() -> bool:
    return DEVICE.type != "cuda" or torch.cuda.is_available()


def pytest_runtest_setup(item: pytest.Item) -> None:  # a conftest's hook: only for the tests in tests/gpu
    if not cuda_available():
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{REQUIRE_ENV}=1 but {NO_CUDA}", pytrace=False)
        pytest.skip(NO_CUDA)


@pytest.fixture
def deterministic():
    """Deterministic CUDA kernels for the length of a test (cuDNN, cuBLAS, scatter/index ops)."""
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.backends.cudnn.deterministic)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic = True
    yield
    torch.use_deterministic_algorithms(before[0], warn_only=before[1])
    torch.backends.cudnn.deterministic = before[2]


def gpu_trainer(tmp_path, run_id: str, *extra: str, config: str = "resnet18_baseline", resume: bool = False,
                hooks=()) -> Trainer:
    """The engine's own Trainer on the GPU, in this process (its events and checkpoints under tmp_path)."""
    cfg = load_config(config, [*GPU_TINY, *extra], CONFIGS)
    trainer = Trainer(cfg, run_id=run_id, home=tmp_path, data_root=tmp_path, resume=resume, hooks=hooks)
    trainer.prepare()
    return trainer


def events_of(tmp_path, run_id: str, kind: str | None = None) -> list[dict]:
    events = read_events(tmp_path / run_id / "events.jsonl")
    return [e for e in events if kind is None or e["type"] == kind]


def last_state(tmp_path, run_id: str) -> dict:
    return load_checkpoint(tmp_path / run_id / "checkpoints" / "last.pt")
