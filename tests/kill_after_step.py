"""Test-only: `python -m kill_after_step N TRAIN-ARGS...` runs `ao train` (as `python -m activation_oracles.train`)
and SIGKILLs the process right after optimiser step N, its metrics and checkpoint written: a crash mid-run.
Under torchrun every rank runs it and kills itself at the same step. It hands `train` a callback; the
trainer itself has no crash switch."""

from __future__ import annotations

import functools
import os
import signal
import sys


def main() -> None:
    n = int(sys.argv.pop(1))

    def kill(step: int) -> None:
        if step == n:
            os.kill(os.getpid(), signal.SIGKILL)

    from activation_oracles.train import loop
    from activation_oracles.train.__main__ import main as train_main

    loop.train = functools.partial(loop.train, callbacks=[kill])  # what `ao train` calls
    train_main()


if __name__ == "__main__":
    main()
