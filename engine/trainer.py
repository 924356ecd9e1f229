"""The training loop: one run, from a validated config to events, checkpoints and store rows.

Runs unchanged in a single process or under torchrun (DDP); only rank 0 writes.
"""
from __future__ import annotations

import errno
import os
import random
import signal
import socket
import sys
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from .checkpoint import load_checkpoint, repair_best, save_checkpoint
from .config import ConfigError, ExperimentConfig, config_from_dict
from .data import load_dataset, make_pipeline
from .ddp import convert_sync_batchnorm, device_label
from .events import EventWriter
from .losses import Criterion
from .models import build_model, count_flops, count_params
from .schedule import build_optimizer, build_scheduler
from .stop_request import StopRequestWatcher
from .store import Store

STEP_EVENT_INTERVAL_S = 0.2   # at most ~5 step events per second
# Fault tests only (tests/integration/test_faults.py): raise a CUDA out-of-memory error at this global step.
_TEST_OOM_AT_STEP = int(os.environ.get("CIFAR_TUI_TEST_OOM_AT_STEP") or 0)
HEARTBEAT_INTERVAL_S = 5.0

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_STOPPED = 0, 1, 2, 130


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1  # processes on this node

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def dist_info_from_env() -> DistInfo:
    """What torchrun tells each process (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE)."""
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    return DistInfo(int(os.environ.get("RANK", 0)), world_size, int(os.environ.get("LOCAL_RANK", 0)),
                    int(os.environ.get("LOCAL_WORLD_SIZE", world_size)))


def select_device(requested: str, info: DistInfo) -> torch.device:
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"train.device: {requested} asked for but no CUDA device is available (use cpu or auto)")
        if requested == "cuda":
            if info.local_rank >= torch.cuda.device_count():
                raise ConfigError(f"train.device: local rank {info.local_rank} needs cuda:{info.local_rank} "
                                  f"but {torch.cuda.device_count()} CUDA devices are visible (fewer processes per node?)")
            return torch.device("cuda", info.local_rank if info.enabled else torch.cuda.current_device())
        if info.enabled:  # one GPU per process: rank r of a node uses cuda:LOCAL_RANK
            raise ConfigError(f"train.device: {requested} with {info.world_size} processes; use cuda or auto "
                              "(each process takes cuda:LOCAL_RANK; choose the GPUs with CUDA_VISIBLE_DEVICES)")
        index = int(requested.split(":")[1])
        if index >= torch.cuda.device_count():
            raise ConfigError(f"train.device: {requested} does not exist ({torch.cuda.device_count()} CUDA devices)")
        return torch.device(requested)
    if requested == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("train.device: mps is not available on this machine")
    return torch.device(requested)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    if precision == "fp32":
        return None
    if precision == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return None
    return torch.bfloat16 if precision == "bf16" else torch.float16


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]), "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64))}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    random.setstate((3, tuple(int(x) for x in state["python"]), None))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), 624, 0, 0.0))


def failure_message(exc: BaseException, cfg: ExperimentConfig) -> str:
    if isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower():
        return (f"out of memory with train.batch_size={cfg.train.batch_size}; try a smaller batch, "
                f"e.g. --set train.batch_size={max(1, cfg.train.batch_size // 2)}")
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):  # EFBIG: ulimit -f
        return (f"disk full while writing {getattr(exc, 'filename', None) or 'the run directory'} ({exc.strerror}): "
                f"free space, then `cifar-tui resume`")
    if isinstance(exc, OSError) and exc.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
        return f"cannot write {getattr(exc, 'filename', None) or 'the run directory'} ({exc.strerror}); fix permissions, then `cifar-tui resume`"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:500]


class StopRequested:
    """SIGINT/SIGTERM ask for a graceful stop; a second signal stops at once."""

    def __init__(self) -> None:
        self.flag = False
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:  # noqa: ARG002
        if self.flag:
            raise KeyboardInterrupt
        self.flag = True

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class SafeStore:
    """Store writes never kill a run: the events file is the durable record."""

    def __init__(self, home: Path):
        self.store: Store | None = None
        try:
            self.store = Store(home)
        except Exception as exc:  # noqa: BLE001
            print(f"warning: store unavailable ({exc}); events are still written", file=sys.stderr)

    def __getattr__(self, name: str):
        method = getattr(self.store, name, None) if self.store else None

        def call(*args, **kwargs):
            if method is None:
                return None
            try:
                return method(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001
                print(f"warning: store write {name} failed: {exc}", file=sys.stderr)
                return None

        return call


class Heartbeat(threading.Thread):
    def __init__(self, writer: EventWriter, lock: threading.Lock, home: Path, run_id: str, wall_clock):
        super().__init__(daemon=True, name="heartbeat")
        self.writer, self.lock, self.home, self.run_id, self.wall_clock = writer, lock, home, run_id, wall_clock
        self.stop_event = threading.Event()

    def run(self) -> None:
        store = SafeStore(self.home)
        while not self.stop_event.wait(HEARTBEAT_INTERVAL_S):
            with self.lock:
                self.writer.emit("heartbeat")
            store.heartbeat(self.run_id, self.wall_clock())
        store.close()


class Teacher:
    """A frozen finished run used for knowledge distillation."""

    def __init__(self, run_dir: Path, device: torch.device, channels_last: bool):
        from .config import read_config_file

        self.cfg = config_from_dict(read_config_file(run_dir / "config.yaml"), str(run_dir / "config.yaml"))
        state = load_checkpoint(run_dir / "checkpoints" / "best.pt")
        model_cfg = self.cfg.model.model_copy(update={"pretrained": False, "weights": None})
        self.model = build_model(model_cfg)
        self.model.load_state_dict(state["model"])
        self.model.to(device).train(False).requires_grad_(False)
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.criterion = Criterion(self.cfg.loss)
        self.image_size = self.cfg.data.image_size

    @torch.no_grad()
    def logits(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        # the teacher's logits pass its own margin too, as in the seed
        return self.criterion.train_logits(self.model(x), labels)


def resolve_teacher(cfg: ExperimentConfig, home: Path) -> Path | None:
    if cfg.loss.kd is None:
        return None
    ref = cfg.loss.kd.teacher
    direct = Path(home) / ref
    if ref not in (".", "..") and "/" not in ref and (direct / "checkpoints" / "best.pt").is_file():
        return direct
    store = Store(home)
    try:
        row = store.latest_finished(ref, cfg.data.source)
    finally:
        store.close()
    if row and row.get("run_dir") and (Path(row["run_dir"]) / "checkpoints" / "best.pt").is_file():
        return Path(row["run_dir"])
    raise ConfigError(f"loss.kd.teacher: no finished {cfg.data.source} run of {ref!r} in {home}; "
                      f"train the teacher first: cifar-tui run {ref}" + (" --data synthetic" if cfg.is_synthetic else ""))


class Trainer:
    def __init__(self, cfg: ExperimentConfig, *, run_id: str, home: Path, data_root: Path,
                 resume: bool = False, info: DistInfo | None = None, start_info: dict | None = None):
        self.cfg, self.run_id, self.home, self.data_root = cfg, run_id, Path(home), Path(data_root)
        self.run_dir = self.home / run_id
        self.start_info = dict(start_info or {})  # extra `start` fields: study, group, provenance
        self.stop_requests = StopRequestWatcher(self.run_dir)  # a stop / prune asked for through the run dir
        self.resume = resume
        self.info = info or DistInfo()
        self.stop = StopRequested()
        self.writer: EventWriter | None = None
        self.lock = threading.Lock()
        self.wall_s = 0.0
        self._wall_t0 = time.monotonic()

    # ---------------------------------------------------------------- setup
    def prepare(self) -> None:
        """Everything that can fail on bad input, before anything is written."""
        cfg, info = self.cfg, self.info
        self.device = select_device(cfg.train.device, info)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
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
        self.teacher = Teacher(teacher_dir, self.device, cfg.train.channels_last) if teacher_dir else None
        self.criterion = Criterion(cfg.loss)
        self.optimizer = build_optimizer(self.model.parameters(), cfg.optim)
        self.steps_per_epoch = self.pipeline.steps_per_epoch(cfg.train.batch_size)
        self.scheduler = build_scheduler(self.optimizer, cfg.schedule, cfg.optim.lr, self.steps_per_epoch, cfg.train.epochs)
        self.amp_dtype = autocast_dtype(cfg.train.precision, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.forward_model: torch.nn.Module = self.model
        if info.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.forward_model = DDP(self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if cfg.train.compile:
            self.forward_model = torch.compile(self.forward_model)
        # progress state (restored on resume)
        self.epoch, self.step_in_epoch, self.global_step = 0, 0, 0
        self.best_acc, self.best_epoch = None, None
        self.partial = torch.zeros(3, dtype=torch.float64, device=self.device)  # loss sum, correct, seen
        self.resumed_from = None
        last = self.run_dir / "checkpoints" / "last.pt"
        if self.resume and last.is_file():
            self._restore(load_checkpoint(last, map_location=self.device))

    def _restore(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.step_in_epoch, self.global_step = state["epoch"], state["step_in_epoch"], state["global_step"]
        self.best_acc, self.best_epoch = state["best_acc"], state["best_epoch"]
        if self.info.is_main:  # rank 0 saved the epoch's sums over all ranks; the others start from zero
            self.partial = state["partial"].to(self.device)
        self.wall_s = float(state["wall_s"])
        set_rng_state(state["rng"])
        self.resumed_from = {"epoch": self.epoch, "step": self.step_in_epoch}
        if self.info.is_main:  # a crash between writing last.pt and best.pt: last.pt holds the best model
            repair_best(self.run_dir / "checkpoints" / "best.pt", state)

    def _state(self) -> dict:
        return {
            "run_id": self.run_id, "config": self.cfg.to_dict(),
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
            "epoch": self.epoch, "step_in_epoch": self.step_in_epoch, "global_step": self.global_step,
            "best_acc": self.best_acc, "best_epoch": self.best_epoch, "partial": self.partial.cpu(),
            "wall_s": self.wall_clock(), "rng": rng_state(),
        }

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
            self.writer = EventWriter(self.run_dir / "events.jsonl", self.run_id)
            self.stop_requests.clear()
            self.store = SafeStore(self.home)
            self.tb = self._tensorboard()
        self.stop.install()
        status, error, code = "completed", None, EXIT_OK
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
                heartbeat = Heartbeat(self.writer, self.lock, self.home, self.run_id, self.wall_clock)
                heartbeat.start()
            while self.epoch < self.cfg.train.epochs and self._train_epoch():
                pass
            if os.environ.get("CIFAR_TUI_DUMP_RANK_STATE"):  # tests: every rank's final weights
                torch.save(self.model.state_dict(), Path(os.environ["CIFAR_TUI_DUMP_RANK_STATE"]) / f"rank{self.info.rank}.pt")
            if self.epoch < self.cfg.train.epochs:
                # Under torchrun a non-zero exit is a failure: the agent would kill the other ranks,
                # rank 0 perhaps while it writes its checkpoint. The end event says "stopped".
                status, code = "stopped", EXIT_OK if self.info.enabled else EXIT_STOPPED
        except KeyboardInterrupt:
            status, code = "stopped", EXIT_STOPPED
        except Exception as exc:  # noqa: BLE001 - every failure ends the run with a readable event
            status, error, code = "failed", failure_message(exc, self.cfg), EXIT_FAILED
            if os.environ.get("CIFAR_TUI_DEBUG"):
                raise
        finally:
            if heartbeat:
                heartbeat.stop_event.set()
                heartbeat.join(timeout=10)
            self.stop.restore()
            if main:
                status, end_extra = self.stop_requests.end_status(status)  # stopped on request: perhaps pruned
                # store first: a reader that sees the `end` event then finds the final status in the store
                self.store.run_ended(self.run_id, status, error, self.wall_clock())
                try:
                    self.emit("end", status=status, error=error, best_acc=self.best_acc, best_epoch=self.best_epoch,
                              epochs_done=self.epoch, wall_s=round(self.wall_clock(), 3), **end_extra)
                except OSError as exc:  # the disk is full: the store already has the final status
                    print(f"warning: could not write the end event: {exc}", file=sys.stderr)
                if self.tb is not None:
                    self.tb.close()
                self.writer.close()
        if error:
            print(f"error: {error}", file=sys.stderr)
        return code

    def _tensorboard(self):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return None
        return SummaryWriter(str(self.run_dir / "tb"))

    def _stop_requested(self) -> bool:
        flag = self.stop.flag or self.stop_requests.requested()
        if self.info.enabled:
            # every rank must leave the loop at the same step
            t = torch.tensor([1.0 if flag else 0.0], device=self.device)
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            flag = bool(t.item())
        return flag

    def _train_epoch(self) -> bool:
        """One epoch from self.step_in_epoch; False when stopped part-way."""
        cfg = self.cfg
        self.forward_model.train()
        amp = torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp_dtype else nullcontext()
        t_epoch = time.monotonic()
        t_emit, seen_at_emit = time.monotonic(), float(self.partial[2])
        batches = self.pipeline.train_batches(self.epoch, cfg.train.seed, cfg.train.batch_size, self.step_in_epoch)
        check_every = 1 if not self.info.enabled else 10
        for x, y in batches:
            with amp:
                output = self.forward_model(x)
                logits = self.criterion.train_logits(output, y)
                teacher_logits = self.teacher.logits(x, y) if self.teacher else None
                loss = self.criterion.loss(logits, y, teacher_logits)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss * self._share_of_global_batch(y.shape[0])).backward()
            if cfg.train.grad_clip:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.train.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            with torch.no_grad():
                correct = (output.argmax(1) == y).sum()
                # torch.full, not torch.tensor: a host->device copy would sync with the GPU every step
                self.partial += torch.stack([loss.detach().double() * y.shape[0], correct.double(),
                                             torch.full((), float(y.shape[0]), dtype=torch.float64, device=self.device)])
            self.step_in_epoch += 1
            self.global_step += 1
            if self.global_step == _TEST_OOM_AT_STEP:
                raise torch.cuda.OutOfMemoryError(f"CUDA out of memory (CIFAR_TUI_TEST_OOM_AT_STEP={self.global_step})")
            now = time.monotonic()
            if self.info.is_main and now - t_emit >= STEP_EVENT_INTERVAL_S:
                loss_sum, correct_sum, seen = self.partial.tolist()  # the one host sync, ~5 per second
                lr = self.optimizer.param_groups[0]["lr"]
                img_s = (seen - seen_at_emit) * self.info.world_size / max(now - t_emit, 1e-9)
                self.emit("step", epoch=self.epoch + 1, step=self.step_in_epoch, steps_per_epoch=self.steps_per_epoch,
                          loss=round(loss_sum / max(seen, 1), 5), acc=round(100 * correct_sum / max(seen, 1), 3),
                          lr=lr, img_per_s=round(img_s, 1))
                if self.tb is not None:
                    self.tb.add_scalar("train/loss_step", loss_sum / max(seen, 1), self.global_step)
                t_emit, seen_at_emit = now, seen
            if self.step_in_epoch % check_every == 0 and self._stop_requested():
                if self.step_in_epoch < self.steps_per_epoch:
                    if self.info.enabled:  # rank 0's checkpoint carries the epoch's sums over all ranks
                        dist.all_reduce(self.partial)
                    self._adopt_rank0_buffers()
                    self._checkpoint(is_best=False)
                    return False
        checkpointed = self._finish_epoch(time.monotonic() - t_epoch)
        if self._stop_requested():
            if not checkpointed:
                self._checkpoint(is_best=False)
            return False
        return True

    def _share_of_global_batch(self, local_n: int) -> float:
        """DDP averages the ranks' gradients of their own mean losses. When a global batch does not
        divide evenly (250 on 4 GPUs: 63, 63, 62, 62) each rank's mean is weighted by its share, so
        that the step follows the mean over the global batch, as in one process. 1.0 otherwise."""
        if not self.info.enabled:
            return 1.0
        bs = self.cfg.train.batch_size
        global_n = min(bs, self.pipeline.num_train - self.step_in_epoch * bs)
        return local_n * self.info.world_size / global_n

    @torch.no_grad()
    def _adopt_rank0_buffers(self) -> None:
        """Without SyncBN each rank's last step moved its own BatchNorm statistics: every rank
        evaluates, stops and ends with rank 0's, the ones its checkpoint holds."""
        if self.info.enabled and not self.cfg.train.sync_bn:
            for buffer in self.model.buffers():
                dist.broadcast(buffer, 0)

    @torch.no_grad()
    def evaluate(self) -> tuple[float, float]:
        self._adopt_rank0_buffers()
        self.forward_model.train(False)
        amp = torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp_dtype else nullcontext()
        totals = torch.zeros(3, dtype=torch.float64, device=self.device)
        bs = self.cfg.eval.batch_size or self.cfg.train.batch_size
        for x, y in self.pipeline.test_batches(bs):
            with amp:
                output = self.model(x)
            totals[0] += self.criterion.eval_loss(output, y).double()
            totals[1] += (output.argmax(1) == y).sum().double()
            totals[2] += y.shape[0]
        if self.info.enabled:
            dist.all_reduce(totals)
        loss_sum, correct, seen = totals.tolist()
        return loss_sum / max(seen, 1), 100.0 * correct / max(seen, 1)

    def _finish_epoch(self, train_s: float) -> bool:
        """Evaluate, record and checkpoint a finished epoch; True when a checkpoint was written."""
        partial = self.partial.clone()
        if self.info.enabled:
            dist.all_reduce(partial)
        loss_sum, correct, seen = partial.tolist()
        self.epoch += 1
        self.step_in_epoch = 0
        self.partial.zero_()
        evaluated = self.epoch % self.cfg.eval.every == 0 or self.epoch == self.cfg.train.epochs
        test_loss = test_acc = None
        t_eval = time.monotonic()
        if evaluated:
            test_loss, test_acc = self.evaluate()
            if self.best_acc is None or test_acc > self.best_acc:
                self.best_acc, self.best_epoch = test_acc, self.epoch
        epoch_s = train_s + (time.monotonic() - t_eval)
        if not self.info.is_main:
            return False
        record = {
            "epoch": self.epoch, "train_loss": loss_sum / max(seen, 1), "train_acc": 100.0 * correct / max(seen, 1),
            "test_loss": test_loss, "test_acc": test_acc, "best_acc": self.best_acc, "best_epoch": self.best_epoch,
            "lr": self.optimizer.param_groups[0]["lr"], "epoch_s": round(epoch_s, 3),
            "epochs": self.cfg.train.epochs,
        }
        self.emit("epoch", **record)
        self.store.epoch_done(self.run_id, record, self.wall_clock())
        if self.tb is not None:
            for key in ("train_loss", "train_acc", "test_loss", "test_acc", "lr"):
                if record[key] is not None:
                    self.tb.add_scalar(key.replace("_", "/", 1), record[key], self.epoch)
            self.tb.flush()
        is_best = evaluated and self.best_epoch == self.epoch
        if is_best or self.epoch % self.cfg.train.checkpoint_every == 0 or self.epoch == self.cfg.train.epochs:
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
            save_checkpoint({"run_id": self.run_id, "config": state["config"], "model": state["model"],
                             "epoch": self.epoch, "best_acc": self.best_acc}, best)
            self.emit("checkpoint", path=str(best), epoch=self.epoch, is_best=True)


def init_distributed(info: DistInfo, device_hint: str) -> None:
    """Join torchrun's process group: NCCL when the ranks train on GPUs, gloo on CPU."""
    if not info.enabled or dist.is_initialized():
        return
    use_nccl = device_hint != "cpu" and torch.cuda.is_available()
    dist.init_process_group(backend="nccl" if use_nccl else "gloo")
