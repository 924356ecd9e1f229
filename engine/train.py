"""Engine entry point: `python -m engine.train --config NAME --run-id ID --home DIR`.

Runs bare (a batch job, torchrun) as well as under cifar-tui. Exit codes: 0 completed,
1 failed, 2 bad input (one line on stderr, nothing written), 130 stopped.

Under torchrun (`torchrun --nproc-per-node=N -m engine.train ...`, or `cifar-tui run --nproc N`)
every process trains on its share of each global batch (train.batch_size is the global batch)
and only rank 0 writes events, checkpoints and store rows. SIGINT/SIGTERM to any rank stops all
of them at the same step; a stopped DDP run exits 0 (a non-zero exit makes torchrun kill the
other ranks) and its `end` event says "stopped".
"""
from __future__ import annotations

from .stop_request import early_stop_held, hold_early_stops

if __name__ == "__main__":  # before the other imports: a stop that comes while the engine starts is held
    hold_early_stops()

import argparse  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from . import fault_hooks  # noqa: E402
from .config import ConfigError, apply_overrides, config_from_dict, load_config, read_config_file  # noqa: E402
from .keep import check_resumable  # noqa: E402
from .record.paths import check_run_id, default_data_root, default_home, new_run_id, write_run_config  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m engine.train", description=__doc__)
    p.add_argument("--config", help="config name (from --configs) or path to a YAML file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--configs", type=Path, default=None, help="configs directory")
    p.add_argument("--run-id", default=None)
    p.add_argument("--resume", default=None, metavar="RUN_ID", help="continue RUN_ID from its last checkpoint")
    p.add_argument("--epochs", type=int, default=None, metavar="N",
                   help="with --resume: train to N epochs in all (extends a completed run that kept last.pt)")
    p.add_argument("--home", type=Path, default=None)
    p.add_argument("--data-root", type=Path, default=None)
    p.add_argument("--study", default=None, help="the study this run belongs to (recorded in `start`)")
    p.add_argument("--group", default=None, help="its group: config + overrides, seed left out (recorded in `start`)")
    args = p.parse_args(argv)
    if not args.config and not args.resume:
        p.error("one of --config or --resume is required")
    if args.epochs is not None and not args.resume:
        p.error("--epochs goes with --resume (a new run takes --set train.epochs=N)")
    return args


def study_labels(args: argparse.Namespace, run_dir: Path) -> dict:
    """`start.study` / `start.group`: as given, or on resume as the run's previous start said."""
    study, group = args.study, args.group
    if args.resume and (study is None or group is None):
        from .record.events import latest_start

        start = latest_start(run_dir)
        if start:
            study = study if study is not None else start.get("study")
            group = group if group is not None else start.get("group")
    return {k: v for k, v in (("study", study), ("group", group)) if v is not None}


def main(argv: list[str] | None = None) -> int:
    if not early_stop_held():  # main() called in-process, not as `python -m engine.train`
        hold_early_stops()
    args = parse_args(argv)
    fault_hooks.check_environment(report=os.environ.get("RANK", "0") == "0")  # a misset test hook: one warning
    home = args.home or default_home()
    data_root = args.data_root or default_data_root()
    try:
        if args.resume:
            run_id = check_run_id(args.resume)
            config_file = home / run_id / "config.yaml"
            if not config_file.is_file():
                raise ConfigError(f"{config_file}: no such run to resume")
            cfg = config_from_dict(read_config_file(config_file), str(config_file))
            check_resumable(run_id, home / run_id)
            if args.epochs is not None:
                cfg = config_from_dict(apply_overrides(cfg.to_dict(), [f"train.epochs={args.epochs}"]),
                                       f"{config_file} (--epochs {args.epochs})")
        else:
            cfg = load_config(args.config, args.overrides, args.configs)
            run_id = check_run_id(args.run_id or new_run_id(cfg.name))

        # torch is imported only now: bad input above is reported fast
        from .data import DataError
        from .ddp import DistInfo, dist_info_from_env, init_distributed
        from .lifecycle import EXIT_BAD_INPUT
        from .trainer import Trainer

        info: DistInfo = dist_info_from_env()
        init_distributed(info, cfg.train.device)
        start_info = study_labels(args, home / run_id) if info.is_main else {}
        if info.is_main:
            from .record.provenance import collect

            start_info["provenance"] = collect(argv)
        trainer = Trainer(cfg, run_id=run_id, home=home, data_root=data_root, resume=bool(args.resume), info=info,
                          start_info=start_info)
        try:
            trainer.prepare()
        except (ConfigError, DataError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
        if info.is_main:
            if args.epochs is not None:  # the run dir's config says how long the run now trains
                write_run_config(home / run_id, cfg)
            print(f"run {run_id}: {home / run_id}", flush=True)
            if args.resume and trainer.resumed_from is None:  # stopped or killed before its first checkpoint
                print(f"run {run_id} has no checkpoint yet: it starts over from epoch 1", flush=True)
        return trainer.run()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        try:
            import torch.distributed as dist

            if "torch" in sys.modules and dist.is_available() and dist.is_initialized():
                dist.destroy_process_group()
        except Exception:  # noqa: BLE001
            pass


if __name__ == "__main__":
    sys.exit(main())
