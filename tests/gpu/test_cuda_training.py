"""The engine's CUDA training paths, for real, with the engine's own Trainer in this process:
bf16 and fp16 autocast (GradScaler), channels_last, fused AdamW/SGD, torch.compile of a config,
peak GPU memory in the epoch events, and a stopped-and-resumed GPU run that ends exactly where an
uninterrupted one ends (deterministic kernels)."""
from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from engine.ddp import weights_sha256
from engine.hooks import TrainerHook
from engine.optim import build_optimizer

from tests.gpu.conftest import events_of, gpu_trainer, last_state
from tests.support.checkpoints import assert_same_training_state, epoch_metrics

pytestmark = pytest.mark.gpu


class StopAtStep(TrainerHook):
    def __init__(self, step: int) -> None:
        self.step = step

    def step_end(self, trainer, loss, batch_size):
        if trainer.global_step == self.step:
            trainer.stop.flag = True


def training_output_dtypes(trainer) -> list[torch.dtype]:
    seen: list[torch.dtype] = []
    trainer.model.backbone.register_forward_hook(lambda m, i, out: seen.append(out.dtype) if m.training else None)
    return seen


def test_bf16_autocast_trains_in_bfloat16_on_the_gpu_without_loss_scaling(tmp_path):
    if not torch.cuda.is_bf16_supported():
        pytest.skip(f"{torch.cuda.get_device_name()} has no bf16")
    t = gpu_trainer(tmp_path, "bf16", "train.precision=bf16")
    seen = training_output_dtypes(t)
    assert t.amp_dtype == torch.bfloat16 and not t.scaler.is_enabled()
    assert t.run() == 0
    assert seen and set(seen) == {torch.bfloat16}, seen  # every training forward
    (epoch,) = events_of(tmp_path, "bf16", "epoch")
    assert math.isfinite(epoch["train_loss"]) and events_of(tmp_path, "bf16", "end")[0]["status"] == "completed"


def test_fp16_autocast_scales_the_loss_with_a_cuda_grad_scaler_that_is_checkpointed(tmp_path):
    t = gpu_trainer(tmp_path, "fp16", "train.precision=fp16", "train.epochs=2")
    seen = training_output_dtypes(t)
    assert t.scaler.is_enabled()
    assert t.run() == 0
    assert seen and set(seen) == {torch.float16}, seen
    state = t.scaler.state_dict()
    steps = 2 * t.steps_per_epoch
    # update() ran after every step: the scale grew untouched (no overflow) or was cut on an overflow
    assert state["scale"] < 2.0 ** 16 or state["_growth_tracker"] == steps, state
    assert t.scaler._scale.is_cuda
    assert last_state(tmp_path, "fp16")["scaler"] == state
    assert all(math.isfinite(e["train_loss"]) for e in events_of(tmp_path, "fp16", "epoch"))


def test_channels_last_keeps_weights_and_batches_nhwc_on_the_gpu_and_trains_as_nchw(tmp_path):
    nhwc = gpu_trainer(tmp_path, "nhwc", "train.channels_last=true")
    convs = [m.weight for m in nhwc.model.modules() if isinstance(m, nn.Conv2d) and m.weight.dim() == 4]
    assert convs and all(w.is_cuda and w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    x, _ = next(iter(nhwc.pipeline.train_batches(0, 0, 64)))
    assert x.is_cuda and x.is_contiguous(memory_format=torch.channels_last)
    assert nhwc.run() == 0
    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)  # the optimizer kept the layout

    nchw = gpu_trainer(tmp_path, "nchw", "train.channels_last=false")
    assert nchw.run() == 0
    a, b = epoch_metrics(tmp_path / "nhwc"), epoch_metrics(tmp_path / "nchw")
    assert a == pytest.approx(b, rel=2e-2, abs=1e-3)  # other kernels, the same training


@pytest.mark.parametrize("name", ["adamw", "sgd"])
def test_fused_optimizers_on_the_gpu_step_as_the_foreach_ones(tmp_path, name):
    t = gpu_trainer(tmp_path, name, f"optim.name={name}", "optim.weight_decay=0.01")
    assert t.optimizer.defaults.get("fused") is True, t.optimizer.defaults
    model = t.model
    reference = copy.deepcopy(model)
    foreach = build_optimizer(reference, t.cfg.optim)  # no device: torch's default (foreach) on CUDA
    assert not foreach.defaults.get("fused")
    x, y = next(iter(t.pipeline.train_batches(0, 0, 64)))
    for _ in range(3):
        for net, opt in ((model, t.optimizer), (reference, foreach)):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(net(x), y).backward()
            opt.step()
    for (key, p), q in zip(model.named_parameters(), reference.parameters()):
        assert torch.allclose(p, q, rtol=1e-4, atol=1e-6), key
    # the fused optimizer's state resumes on the CPU (a GPU checkpoint continued elsewhere)
    on_cpu = copy.deepcopy(model).cpu()
    cpu_opt = build_optimizer(on_cpu, t.cfg.optim, torch.device("cpu"))
    cpu_opt.load_state_dict(t.optimizer.state_dict())
    F.cross_entropy(on_cpu(x.cpu()), y.cpu()).backward()
    cpu_opt.step()


def test_torch_compile_of_the_fast_recipe_trains_on_the_gpu(tmp_path):
    """resnet18_fast (compile: true, compile_mode: auto -> reduce-overhead: CUDA graphs), shrunk
    in data, not in model; its losses match the same run uncompiled."""
    small = ["model.backbone=resnet18", "data.train_limit=1024", "train.batch_size=128", "eval.batch_size=64"]
    compiled = gpu_trainer(tmp_path, "compiled", *small, "train.epochs=2", config="resnet18_fast")
    assert compiled.cfg.train.compile and compiled.compile_mode == "reduce-overhead"
    assert isinstance(compiled.forward_model, torch._dynamo.eval_frame.OptimizedModule)
    assert compiled.run() == 0
    eager = gpu_trainer(tmp_path, "eager", *small, "train.epochs=2", "train.compile=false", config="resnet18_fast")
    assert eager.compile_mode is None and eager.run() == 0
    a, b = epoch_metrics(tmp_path / "compiled"), epoch_metrics(tmp_path / "eager")
    assert [e[0] for e in a] == [1, 2] and all(math.isfinite(v) for e in a for v in e[1:])
    assert [e[1] for e in a] == pytest.approx([e[1] for e in b], rel=5e-2)  # train loss: bf16, other kernels


def test_epoch_events_carry_each_epochs_peak_gpu_memory(tmp_path):
    small = gpu_trainer(tmp_path, "b32", "train.batch_size=32", "train.epochs=2")
    assert small.run() == 0
    large = gpu_trainer(tmp_path, "b256", "train.batch_size=256", "data.train_limit=512", "train.epochs=2")
    assert large.run() == 0
    peaks = {run: [e["peak_mem_mb"] for e in events_of(tmp_path, run, "epoch")] for run in ("b32", "b256")}
    assert all(len(p) == 2 and all(v > 0 for v in p) for p in peaks.values()), peaks
    assert min(peaks["b256"]) > max(peaks["b32"]), peaks  # eight times the batch: more activations held
    assert max(peaks["b256"]) <= torch.cuda.max_memory_allocated() / 2**20 + 1, peaks


def test_a_gpu_run_stopped_and_resumed_ends_exactly_as_an_uninterrupted_one(tmp_path, deterministic):
    extra = ["train.epochs=2", "train.ema.decay=0.9", "schedule.name=cosine", "optim.name=adamw"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        whole = gpu_trainer(tmp_path, "whole", *extra)
        assert whole.run() == 0
        again = gpu_trainer(tmp_path, "again", *extra)
        assert again.run() == 0
    nondeterministic = sorted({str(w.message)[:200] for w in caught if "deterministic" in str(w.message)})
    assert epoch_metrics(tmp_path / "whole") == epoch_metrics(tmp_path / "again"), (
        f"two identical GPU runs differ, so no resume can match: {nondeterministic}")

    steps = whole.steps_per_epoch
    stopped = gpu_trainer(tmp_path, "resumed", *extra, hooks=[StopAtStep(steps + 1)])  # inside epoch 2
    assert stopped.run() == 130
    part = last_state(tmp_path, "resumed")
    assert (part["epoch"], part["step_in_epoch"]) == (1, 1)
    resumed = gpu_trainer(tmp_path, "resumed", *extra, resume=True)
    assert resumed.resumed_from == {"epoch": 1, "step": 1}
    assert resumed.run() == 0
    assert epoch_metrics(tmp_path / "resumed") == epoch_metrics(tmp_path / "whole")
    assert events_of(tmp_path, "resumed", "end")[-1]["weights_sha256"] == events_of(tmp_path, "whole", "end")[0][
        "weights_sha256"]
    assert_same_training_state(last_state(tmp_path, "resumed"), last_state(tmp_path, "whole"))
    assert weights_sha256(resumed.model.state_dict()) == weights_sha256(whole.model.state_dict())
