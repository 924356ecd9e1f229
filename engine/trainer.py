"""The training loop: one run, from a validated config to events, checkpoints and store rows.

Runs unchanged in a single process or under torchrun (DDP; the collective steps are in
engine/ddp.py); only rank 0 writes.  Around it: engine/lifecycle.py (signals, heartbeat, exit
codes), engine/optim.py (optimizer and weight-decay groups), engine/step.py (one optimization
step: plain or SAM, soft targets), engine/train_state.py (what a checkpoint holds),
engine/teacher.py (distillation), engine/ema.py (weight EMA, evaluated beside the model),
engine/guard.py (divergence guard, early stopping), engine/fast.py (fused optimizers, compile
modes), engine/hooks.py (where other code acts).
"""
from __future__ import annotations

import os
import socket
import sys
import threading
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Iterable

import torch

from . import fault_hooks
from .checkpoint import load_checkpoint, repair_best, save_checkpoint
from .config import ExperimentConfig
from .data import load_dataset, make_pipeline
from .ddp import (DistInfo, adopt_rank0_buffers, any_rank_each, convert_sync_batchnorm, device_label,
                  rank_weights_sha256, select_device, share_of_global_batch, sum_over_ranks, wrap_ddp)
from .ema import WeightEma, better_of
from .after.evaluate import topk_hits
from .record.events import EventWriter
from .fast import autocast_dtype, compile_mode, compile_module, configure_backends
from .guard import DivergenceGuard, EarlyStopping, TrainingDiverged, chance_loss
from .heartbeat import Heartbeat, peak_memory, reset_peak_memory, run_gpu_devices
from .hooks import EpochTotals, TrainerHook
from .keep import finalize as finalize_checkpoints
from .keep import save_epoch_weights
from .lifecycle import EXIT_FAILED, EXIT_OK, EXIT_STOPPED, SafeStore, StopRequested, failure_message
from .losses import Criterion
from .models import build_model, count_flops, count_params
from .notify import Notice, notify_run_end
from .optim import build_optimizer
from .record.paths import events_path
from .schedule import build_scheduler
from .step import TrainStep
from .stop_request import StopRequestWatcher, process_started_at
from .summary import RunSummaries
from .teacher import Teacher, resolve_teacher
from .train_state import LoopPosition, restore_option, restore_training_state, seed_everything, training_state

STEP_EVENT_INTERVAL_S = 0.2   # at most ~5 step events per second


class Trainer:
    def __init__(self, cfg: ExperimentConfig, *, run_id: str, home: Path, data_root: Path,
                 resume: bool = False, info: DistInfo | None = None, hooks: Iterable[TrainerHook] = (),
                 start_info: dict | None = None):
        self.cfg, self.run_id, self.home, self.data_root = cfg, run_id, Path(home), Path(data_root)
        self.run_dir = self.home / run_id
        self.start_info = dict(start_info or {})  # extra `start` fields: study, group, provenance
        # a stop / prune asked for through the run dir; one written while this process started is kept
        self.stop_requests = StopRequestWatcher(self.run_dir, keep_since=process_started_at())
        self.resume = resume
        self.info = info or DistInfo()
        self.hooks = list(hooks)
        self.stop = StopRequested()
        self.writer: EventWriter | None = None
        self.lock = threading.Lock()
        self.wall_s = 0.0
        self._wall_t0 = time.monotonic()
        self.last_step_at = time.time()  # the heartbeat reports it: a live run without steps is stalled
        self.weights_sha256: list[str] | None = None  # each rank's final weights (the `end` event)
        self.oom_at_step = fault_hooks.oom_at_step()  # fault tests only (engine/fault_hooks.py)

    # ---------------------------------------------------------------- setup
    def prepare(self) -> None:
        """Everything that can fail on bad input, before anything is written."""
        cfg, info = self.cfg, self.info
        self.device = select_device(cfg.train.device, info)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        configure_backends(self.device)
        self.device_label = device_label(self.device, info.world_size, info.local_world_size)
        seed_everything(cfg.train.seed + info.rank)
        if self.device.type == "cpu":
            torch.use_deterministic_algorithms(True, warn_only=True)
        self.dataset = load_dataset(cfg.data, self.data_root)
        self.pipeline = make_pipeline(self.dataset, cfg.data, self.device, channels_last=cfg.train.channels_last,
                                      rank=info.rank, world_size=info.world_size)
        teacher_dir = resolve_teacher(cfg, self.home)
        self.model = build_model(cfg.model)
        if info.enabled and cfg.train.sync_bn:
            self.model = convert_sync_batchnorm(self.model, self.device)
        self.model.to(self.device)
        if cfg.train.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.params = count_params(self.model)
        self.flops = count_flops(self.model, cfg.data.image_size, self.device)
        self.teacher = None
        if teacher_dir:
            self.teacher = Teacher(teacher_dir, self.device, cfg.train.channels_last, cfg.loss.kd.teacher_mode,
                                   sync_bn=info.enabled and cfg.train.sync_bn, mixed_targets=cfg.data.mixup.enabled,
                                   student_normalize=cfg.data.normalize)
        self.criterion = Criterion(cfg.loss)
        self.optimizer = build_optimizer(self.model, cfg.optim, self.device)
        self.steps_per_epoch = self.pipeline.steps_per_epoch(cfg.train.batch_size)
        self.scheduler = build_scheduler(self.optimizer, cfg.schedule, cfg.optim.lr, self.steps_per_epoch, cfg.train.epochs)
        self.amp_dtype = autocast_dtype(cfg.train.precision, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        ddp = wrap_ddp(self.model, self.device, info)
        self.compile_mode = compile_mode(cfg.train.compile_mode, self.device, info.enabled) if cfg.train.compile else None
        self.forward_model: torch.nn.Module = compile_module(ddp, self.compile_mode) if self.compile_mode else ddp
        # the step holds the modules, never the trainer: no reference cycle keeps DDP's process group
        # alive until the interpreter's teardown (a gloo rank then aborted at exit)
        self.train_step = TrainStep(model=self.model, forward=self.forward_model, optimizer=self.optimizer, scaler=self.scaler,
                                    criterion=self.criterion, teacher=self.teacher, amp_dtype=self.amp_dtype,
                                    device=self.device, grad_clip=cfg.train.grad_clip, sam=cfg.optim.sam,
                                    ddp=ddp if info.enabled else None, compile_mode=self.compile_mode)
        # options that watch the run: each None when off
        self.ema = WeightEma(self.model, cfg.train.ema) if cfg.train.ema else None
        limit = cfg.train.divergence.max_loss_ratio * chance_loss(cfg, self.pipeline.num_classes)
        self.guard = DivergenceGuard(limit, self.device) if cfg.train.divergence.enabled else None
        stop = cfg.train.early_stop
        self.early_stop = EarlyStopping(stop.patience, stop.min_delta) if stop else None
        self.end_reason: str | None = None  # why a run ended before its last epoch (early stop), or None
        # progress state (restored on resume)
        self.epoch, self.step_in_epoch, self.global_step = 0, 0, 0
        self.best_acc, self.best_epoch, self.best_model = None, None, "model"
        self.partial = torch.zeros(3, dtype=torch.float64, device=self.device)  # loss sum, correct, seen
        self.resumed_from = None
        last = self.run_dir / "checkpoints" / "last.pt"
        if self.resume and last.is_file():
            self._restore(load_checkpoint(last, map_location=self.device), last)

    def _restore(self, state: dict, path: Path) -> None:
        pos = restore_training_state(state, path, cfg=self.cfg, model=self.model, optimizer=self.optimizer,
                                     scheduler=self.scheduler, scaler=self.scaler)
        self.epoch, self.step_in_epoch, self.global_step = pos.epoch, pos.step_in_epoch, pos.global_step
        self.best_acc, self.best_epoch, self.wall_s = pos.best_acc, pos.best_epoch, pos.wall_s
        self.best_model = pos.best_model
        for key, option in (("ema", self.ema), ("early_stop", self.early_stop)):
            if option is not None:
                restore_option(state, key, path, option)
        if self.info.is_main:  # rank 0 saved the epoch's sums over all ranks; the others start from zero
            self.partial = state["partial"].to(self.device)
        self.resumed_from = {"epoch": self.epoch, "step": self.step_in_epoch}
        if self.info.is_main:  # a crash between writing last.pt and best.pt: last.pt holds the best model
            repair_best(self.run_dir / "checkpoints" / "best.pt", state)

    def _state(self) -> dict:
        position = LoopPosition(self.epoch, self.step_in_epoch, self.global_step, self.best_acc, self.best_epoch,
                                self.wall_clock(), self.best_model)
        extras = {key: option.state_dict() for key, option in (("ema", self.ema), ("early_stop", self.early_stop))
                  if option is not None}
        return training_state(run_id=self.run_id, cfg=self.cfg, model=self.model, optimizer=self.optimizer,
                              scheduler=self.scheduler, scaler=self.scaler, position=position, partial=self.partial,
                              extras=extras)

    def wall_clock(self) -> float:
        return self.wall_s + (time.monotonic() - self._wall_t0)

    def emit(self, type_: str, **fields: Any) -> None:
        if self.writer is not None:
            with self.lock:
                self.writer.emit(type_, **fields)

    # ---------------------------------------------------------------- main
    def run(self) -> int:
        """Train to the end (or until stopped). Returns the process exit code."""
        main = self.info.is_main
        self._wall_t0 = time.monotonic()
        if main:
            (self.run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
            config_file = self.run_dir / "config.yaml"
            if not config_file.exists():
                tmp = config_file.with_suffix(".yaml.tmp")
                tmp.write_text(self.cfg.to_yaml())
                os.replace(tmp, config_file)
            self.writer = EventWriter(events_path(self.run_dir), self.run_id)
            self.stop_requests.clear()
            self.store = SafeStore(self.home)
            self.tb = self._tensorboard()
            self.summaries = RunSummaries(self.run_dir, self.cfg, self.tb)  # summary.csv, TensorBoard hparams
        self.stop.install()
        status, error, reason, code = "completed", None, None, EXIT_OK
        heartbeat = None
        try:
            if main:
                self.emit("start", config_name=self.cfg.name, config=self.cfg.to_dict(), device=self.device_label,
                          data_source=self.cfg.data.source, params=self.params, flops=self.flops, pid=os.getpid(),
                          host=socket.gethostname(), world_size=self.info.world_size,
                          local_world_size=self.info.local_world_size,
                          visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"), resumed_from=self.resumed_from,
                          steps_per_epoch=self.steps_per_epoch, num_train=self.pipeline.num_train,
                          num_test=self.pipeline.num_test, **self.start_info)
                self.store.run_started(self.run_id, config=self.cfg.to_dict(), device=self.device_label, pid=os.getpid(),
                                       run_dir=str(self.run_dir), epochs_total=self.cfg.train.epochs, params=self.params,
                                       flops=self.flops, world_size=self.info.world_size,
                                       study=self.start_info.get("study"), group=self.start_info.get("group"))
                self.summaries.started()
                heartbeat = Heartbeat(self.emit, lambda: SafeStore(self.home), self.run_id, self.wall_clock,
                                      progress_at=lambda: self.last_step_at, gpus=run_gpu_devices(
                                          self.device, self.info.local_world_size if self.info.enabled else 1))
                heartbeat.start()
            while self.epoch < self.cfg.train.epochs and self._train_epoch():
                pass
            self.weights_sha256 = rank_weights_sha256(self.model, self.info)
            reason = self.end_reason
            if self.epoch < self.cfg.train.epochs and reason is None:
                # Under torchrun a non-zero exit is a failure: the agent would kill the other ranks,
                # rank 0 perhaps while it writes its checkpoint. The end event says "stopped".
                status, code = "stopped", EXIT_OK if self.info.enabled else EXIT_STOPPED
        except KeyboardInterrupt:
            status, code = "stopped", EXIT_STOPPED
        except Exception as exc:  # noqa: BLE001 - every failure ends the run with a readable event
            status, error, code = "failed", failure_message(exc, self.cfg), EXIT_FAILED
            reason = error if isinstance(exc, TrainingDiverged) else None
            if os.environ.get("CIFAR_TUI_DEBUG"):
                raise
        finally:
            if heartbeat:
                heartbeat.stop_event.set()
                heartbeat.join(timeout=10)
            self.stop.restore()
            if main:
                status, end_extra = self.stop_requests.end_status(status)  # stopped on request: perhaps pruned
                kept = finalize_checkpoints(self.run_dir, self.cfg.train.keep, status)  # the disk rule (train.keep)
                self.summaries.ended(status)
                # store first: a reader that sees the `end` event then finds the final status in the store
                self.store.run_ended(self.run_id, status, error, self.wall_clock())
                try:
                    end_fields = {"reason": reason, **end_extra}  # a pruned run's reason comes from its request
                    self.emit("end", status=status, error=error, best_acc=self.best_acc, best_epoch=self.best_epoch,
                              best_model=self.best_model, epochs_done=self.epoch, step_in_epoch=self.step_in_epoch,
                              steps_done=self.global_step, wall_s=round(self.wall_clock(), 3), checkpoints=kept,
                              weights_sha256=self.weights_sha256, **end_fields)
                except OSError as exc:  # the disk is full: the store already has the final status
                    print(f"warning: could not write the end event: {exc}", file=sys.stderr)
                if self.tb is not None:
                    self.tb.close()
                self.writer.close()
                notify_run_end(self.home, Notice(self.run_id, status, self.cfg.name, self.best_acc, error=error,
                                                 data_source=self.cfg.data.source, epochs_done=self.epoch,
                                                 epochs_total=self.cfg.train.epochs, run_dir=str(self.run_dir)))
        if error:
            print(f"error: {error}", file=sys.stderr)
        return code

    def _tensorboard(self):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return None
        return SummaryWriter(str(self.run_dir / "tb"))

    def _stop_requested(self, guard: bool = True) -> bool:
        """Whether any rank was asked to stop; first, a divergence (TrainingDiverged) when the guard
        saw a bad loss. Reading the guard syncs with the device, so it is read where the loop syncs
        anyway: here on the CPU (nothing to save) and under DDP (every 10 steps, one all-reduce for
        both answers, so every rank acts at the same step); on one GPU with each step event
        (`guard`), about 5 a second, or when a stop was asked for."""
        stop = self.stop.flag or self.stop_requests.requested()
        found = None
        if self.guard is not None and (guard or stop or self.info.enabled or self.device.type == "cpu"):
            found = self.guard.check()
        diverged, stop = any_rank_each((found is not None, stop), self.info, self.device)
        if diverged:
            raise TrainingDiverged(found.message(self.steps_per_epoch, self.cfg.optim.lr) if found else
                                   "training diverged on another rank; try a lower learning rate (optim.lr)")
        return stop

    def _train_epoch(self) -> bool:
        """One epoch from self.step_in_epoch; False when stopped part-way or ended early."""
        cfg = self.cfg
        for hook in self.hooks:
            hook.epoch_start(self)
        self.forward_model.train()
        t_epoch = time.monotonic()
        reset_peak_memory(self.device)
        t_emit, seen_at_emit = time.monotonic(), float(self.partial[2])
        batches = self.pipeline.train_batches(self.epoch, cfg.train.seed, cfg.train.batch_size, self.step_in_epoch)
        check_every = 1 if not self.info.enabled else 10
        for x, y in batches:
            n = y.shape[0]
            loss, correct = self.train_step.step(x, y, self._share_of_global_batch(n))
            self.scheduler.step()
            with torch.no_grad():
                # torch.full, not torch.tensor: a host->device copy would sync with the GPU every step
                self.partial += torch.stack([loss.double() * n, correct.double(),
                                             torch.full((), float(n), dtype=torch.float64, device=self.device)])
            self.step_in_epoch += 1
            self.global_step += 1
            if self.ema is not None:
                self.ema.step(self.model, self.global_step)
            if self.guard is not None:
                self.guard.observe(loss, self.global_step)
            for hook in self.hooks:
                hook.step_end(self, loss, n)
            self.last_step_at = time.time()
            if self.global_step == self.oom_at_step:
                raise torch.cuda.OutOfMemoryError(f"CUDA out of memory ({fault_hooks.OOM_AT_STEP}={self.global_step})")
            now, emitted = time.monotonic(), False
            if self.info.is_main and now - t_emit >= STEP_EVENT_INTERVAL_S:
                seen_at_emit, t_emit, emitted = self._emit_step(now - t_emit, seen_at_emit), now, True
            if self.step_in_epoch % check_every == 0 and self._stop_requested(guard=emitted):
                if self.step_in_epoch < self.steps_per_epoch:
                    # rank 0's checkpoint carries the epoch's sums over all ranks
                    sum_over_ranks(self.partial, self.info)
                    adopt_rank0_buffers(self.model, self.info, cfg.train.sync_bn)
                    self._checkpoint(is_best=False)
                    return False
        self._raise_if_diverged()  # a diverged epoch is neither evaluated nor checkpointed
        checkpointed = self._finish_epoch(time.monotonic() - t_epoch)
        if self.end_reason is not None:
            return False  # early stop: _finish_epoch wrote the checkpoint
        if self._stop_requested():
            if not checkpointed:
                self._checkpoint(is_best=False)
            return False
        return True

    def _raise_if_diverged(self) -> None:
        """At an epoch's end (every rank): a diverged epoch is neither evaluated nor checkpointed."""
        if self.guard is not None:
            self._stop_requested(guard=True)

    def _emit_step(self, interval_s: float, seen_at_emit: float) -> float:
        """A `step` event (rank 0); returns the images seen so far this epoch."""
        loss_sum, correct_sum, seen = self.partial.tolist()  # the one host sync, ~5 per second
        img_s = (seen - seen_at_emit) * self.info.world_size / max(interval_s, 1e-9)
        self.emit("step", epoch=self.epoch + 1, step=self.step_in_epoch, steps_per_epoch=self.steps_per_epoch,
                  loss=round(loss_sum / max(seen, 1), 5), acc=round(100 * correct_sum / max(seen, 1), 3),
                  lr=self.optimizer.param_groups[0]["lr"], img_per_s=round(img_s, 1))
        if self.tb is not None:
            self.tb.add_scalar("train/loss_step", loss_sum / max(seen, 1), self.global_step)
        return seen

    def _share_of_global_batch(self, local_n: int) -> float:
        bs = self.cfg.train.batch_size
        global_n = min(bs, self.pipeline.num_train - self.step_in_epoch * bs)
        return share_of_global_batch(local_n, global_n, self.info)

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module | None = None) -> tuple[float, float, float]:
        """(test loss, top-1 %, top-5 %) of `model` (default: the trained model; the EMA's is the other)."""
        if model is None:
            model = self.model
            self.forward_model.train(False)
        adopt_rank0_buffers(model, self.info, self.cfg.train.sync_bn)  # EMA buffers average each rank's own
        amp = torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp_dtype else nullcontext()
        totals = torch.zeros(4, dtype=torch.float64, device=self.device)  # loss sum, top-1 hits, seen, top-5 hits
        bs = self.cfg.eval.batch_size or self.cfg.train.batch_size
        for x, y in self.pipeline.test_batches(bs):
            with amp:
                output = model(x)
            totals[0] += self.criterion.eval_loss(output, y).double()
            totals[[1, 3]] += topk_hits(output, y)
            totals[2] += y.shape[0]
            self.last_step_at = time.time()  # evaluation is progress too
        loss_sum, correct, seen, correct5 = sum_over_ranks(totals, self.info).tolist()
        return loss_sum / max(seen, 1), 100.0 * correct / max(seen, 1), 100.0 * correct5 / max(seen, 1)

    def _close_epoch(self, train_s: float) -> EpochTotals:
        """The epoch's training sums over all ranks; the loop moves to the next epoch."""
        loss_sum, correct, seen = sum_over_ranks(self.partial.clone(), self.info).tolist()
        self.epoch += 1
        self.step_in_epoch = 0
        self.partial.zero_()
        return EpochTotals(self.epoch, loss_sum / max(seen, 1), 100.0 * correct / max(seen, 1), int(seen), train_s)

    def _finish_epoch(self, train_s: float) -> bool:
        """Evaluate, record and checkpoint a finished epoch; True when a checkpoint was written."""
        totals = self._close_epoch(train_s)
        for hook in self.hooks:
            hook.epoch_trained(self, totals)
        evaluated = self.epoch % self.cfg.eval.every == 0 or self.epoch == self.cfg.train.epochs
        test_loss = test_acc = test_top5 = ema_loss = ema_acc = None
        t_eval = time.monotonic()
        if evaluated:
            test_loss, test_acc, test_top5 = self.evaluate()
            if self.ema is not None:
                ema_loss, ema_acc, _ = self.evaluate(self.ema.module)
            acc, which = better_of(test_acc, ema_acc)
            if self.best_acc is None or acc > self.best_acc:
                self.best_acc, self.best_epoch, self.best_model = acc, self.epoch, which
            if self.early_stop is not None:
                self.end_reason = self.early_stop.update(self.epoch, acc)
        epoch_s = train_s + (time.monotonic() - t_eval)
        record = {
            "epoch": self.epoch, "train_loss": totals.train_loss, "train_acc": totals.train_acc,
            "test_loss": test_loss, "test_acc": test_acc, "test_top5": test_top5,
            "best_acc": self.best_acc, "best_epoch": self.best_epoch, "best_model": self.best_model,
            "lr": self.optimizer.param_groups[0]["lr"], "epoch_s": round(epoch_s, 3),
            "epochs": self.cfg.train.epochs, **peak_memory(self.device),
        }
        if self.ema is not None:
            record.update(ema_test_loss=ema_loss, ema_test_acc=ema_acc)
        if self.info.is_main:
            self.emit("epoch", **record)
            self.store.epoch_done(self.run_id, record, self.wall_clock())
            self.summaries.epoch(record)
            if self.tb is not None:
                for key in ("train_loss", "train_acc", "test_loss", "test_acc", "ema_test_acc", "lr"):
                    if record.get(key) is not None:
                        self.tb.add_scalar(key.replace("_", "/", 1), record[key], self.epoch)
                self.tb.flush()
        for hook in self.hooks:
            hook.epoch_end(self, record)
        if not self.info.is_main:
            return False
        is_best = evaluated and self.best_epoch == self.epoch
        if (is_best or self.epoch % self.cfg.train.checkpoint_every == 0 or self.epoch == self.cfg.train.epochs
                or self.end_reason is not None):
            self._checkpoint(is_best=is_best)
            return True
        return False

    def _checkpoint(self, is_best: bool) -> None:
        if not self.info.is_main:
            return
        state = self._state()
        last = self.run_dir / "checkpoints" / "last.pt"
        save_checkpoint(state, last)
        self.emit("checkpoint", path=str(last), epoch=self.epoch, step=self.step_in_epoch, is_best=False)
        if is_best:
            best = self.run_dir / "checkpoints" / "best.pt"
            weights = state["ema"]["module"] if self.best_model == "ema" else state["model"]
            save_checkpoint({"run_id": self.run_id, "config": state["config"], "model": weights,
                             "epoch": self.epoch, "best_acc": self.best_acc, "best_model": self.best_model}, best)
            self.emit("checkpoint", path=str(best), epoch=self.epoch, is_best=True)
        save_epoch_weights(self.run_dir, self.cfg.train.keep, state)  # train.keep: all
