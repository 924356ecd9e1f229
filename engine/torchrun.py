"""`python -m engine.torchrun [torchrun options] -m engine.train ...`: PyTorch's torchrun
(``torch.distributed.run``), unchanged, with the engine's exit codes passed on.

torchrun exits 1 whenever a worker exits non-zero; the launcher needs the engine's codes to
tell bad input (2: a one-line reason on stderr, nothing written) and a stop (130) from a
failure (1). Bare ``torchrun ... -m engine.train`` works just as well, with torchrun's codes.
"""
from __future__ import annotations

import os
import signal
import sys

from torch.distributed.elastic.multiprocessing import SignalException
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.run import main as torchrun_main


def _pass_on(signum, frame) -> None:  # noqa: ARG001
    """SIGUSR2 (SLURM's time-limit warning) would end the agent: the ranks get it instead (they stop
    gracefully; under SLURM they got it too, and count it once)."""
    from .record.job import child_pids

    for pid in child_pids(os.getpid()):
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGUSR2, _pass_on)
    try:
        torchrun_main(argv)
    except ChildFailedError as exc:
        codes = {failure.exitcode for failure in exc.failures.values()}
        if codes in ({2}, {130}):  # every rank refused its input / was stopped at once
            return codes.pop()
        print(f"torchrun: {exc}", file=sys.stderr)
        return 1
    except SignalException:
        # torchrun itself was signalled: it has passed the signal on to every worker and waited
        # for them (they stop gracefully), up to its shutdown timeout
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
