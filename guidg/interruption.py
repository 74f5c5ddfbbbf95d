"""Stopping runs on signals, always leaving them resumable.

Inside :func:`handling_stop_signals`, SIGINT (Ctrl-C) and SIGTERM stop the run that is going: during
fine-tuning at the next step boundary, after saving the resumable state there (within
:data:`BOUNDARY_GRACE_S`; a step that takes longer is cut short), elsewhere at once. Either way the stop
is a :class:`RunInterrupted` exception: every ``finally`` runs, temporary files are removed, the run folder's
lock is released, nothing is marked done, and the same command run again resumes the run from its last saved
state (the periodic checkpoints, or the one made at the stop), to the result an uninterrupted run gives. A
second signal stops at once. The command line then exits with 128 + the signal's number (130, 143).

A *checkpoint signal* (Slurm's warning that the time limit is near, or that the job is preempted) asks for
the same stop at the next step boundary but never cuts a step short before ``checkpoint_grace_s``: the job
then requeues itself (:mod:`guidg.launchers`).

A training loop marks its step boundaries with :class:`StepBoundaries`. Under several data-parallel processes
the ranks agree on the step to stop at (:class:`guidg.distributed.LateAgreement`).

This module needs no torch, so the command line can catch :class:`RunInterrupted` without importing it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, Protocol, TypeVar

T = TypeVar("T")

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
BOUNDARY_GRACE_S = 5.0
"""How long SIGINT or SIGTERM waits for the next step boundary before stopping at once: well inside the
seconds a container runtime or Slurm's KillWait leave before SIGKILL."""


class RunInterrupted(BaseException):
    """A run was stopped by a signal; its folder holds what it needs to resume.

    A ``BaseException``, like ``KeyboardInterrupt``, so that no ``except Exception`` handler takes it for a
    failure of the run.
    """

    def __init__(self, signum: int, step: int | None = None, total: int | None = None,
                 run: str | None = None, folder: Path | None = None) -> None:
        super().__init__(signum, step, total, run, folder)
        self.signum = signum
        self.step = step
        """The step whose state was saved at the stop; None when it stopped outside fine-tuning's steps."""
        self.total = total
        self.run = run
        """What was running (``clipood on a-16shot-seed1``), filled in by :func:`guidg.run.attempt`."""
        self.folder = folder

    @property
    def exit_code(self) -> int:
        """The shell's code for a process ended by this signal: 128 + its number."""
        return 128 + int(self.signum)

    def __str__(self) -> str:
        name = signal.Signals(self.signum).name
        what = f" {self.run}" if self.run else ""
        where = f" ({self.folder})" if self.folder else ""
        if self.step is not None:
            return (f"stopped by {name}:{what} saved its state at step {self.step} of {self.total}{where}; run the "
                    "same command again to resume it")
        if self.run:
            return (f"stopped by {name} during{what}{where}; run the same command again: it resumes from its "
                    "last saved state")
        return f"stopped by {name}; run the same command again to resume"


@dataclass
class _Requests:
    """The stop requests this process has received (its signal handlers write here)."""

    signum: int | None = None
    """The first stop or checkpoint signal received, if any."""
    boundaries: int = 0
    """Training loops with step boundaries now running in this process."""
    checkpoint_signal: int | None = None
    checkpoint_grace_s: float = 0.0
    owner: int | None = None
    """The process that installed the handlers; a forked child (a data-loading worker) inherits them but
    keeps the default behaviour."""


_REQUESTS = _Requests()


def stop_requested() -> int | None:
    """The signal that asked this process to stop, or None."""
    return _REQUESTS.signum


def _cut_short(signum: int, frame: Any) -> NoReturn:
    raise RunInterrupted(_REQUESTS.signum or signum)


def _on_signal(signum: int, frame: Any) -> None:
    if os.getpid() != _REQUESTS.owner:  # a forked worker: end as it would have without us
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    first = _REQUESTS.signum is None
    if first:
        _REQUESTS.signum = signum
    if signum == _REQUESTS.checkpoint_signal:
        if first:
            signal.setitimer(signal.ITIMER_REAL, _REQUESTS.checkpoint_grace_s)
        return
    if not first or _REQUESTS.boundaries == 0:
        raise RunInterrupted(signum)
    signal.setitimer(signal.ITIMER_REAL, BOUNDARY_GRACE_S)


@contextlib.contextmanager
def handling_stop_signals(checkpoint_signal: int | None = None, checkpoint_grace_s: float = 60.0) -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM (and ``checkpoint_signal``) stop runs as the module says.

    Outside the main thread, where Python cannot handle signals, this does nothing. The previous handlers
    and requests are put back afterwards (blocks nest: the innermost decides).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handled = [*STOP_SIGNALS, *([checkpoint_signal] if checkpoint_signal is not None else [])]
    previous = {s: signal.getsignal(s) for s in (*handled, signal.SIGALRM)}
    outer = dataclasses.replace(_REQUESTS)
    _REQUESTS.signum, _REQUESTS.boundaries, _REQUESTS.owner = None, 0, os.getpid()
    _REQUESTS.checkpoint_signal, _REQUESTS.checkpoint_grace_s = checkpoint_signal, checkpoint_grace_s
    try:
        signal.signal(signal.SIGALRM, _cut_short)
        for one in handled:
            signal.signal(one, _on_signal)
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        for one, handler in previous.items():
            signal.signal(one, handler)
        for name, value in vars(outer).items():
            setattr(_REQUESTS, name, value)


class Agreement(Protocol):
    """How data-parallel ranks agree whether to stop: called with this rank's wish at every boundary."""

    def __call__(self, here: bool) -> bool: ...

    def finish(self) -> None: ...


class StepBoundaries:
    """The step boundaries of one training loop: where a requested stop saves the state and stops.

    Iterate the loop's batches through :meth:`steps`; at the end of each step call :meth:`requested` (on every
    rank) and, when it is true, save the state and call :meth:`stop`. ``agreement`` makes data-parallel
    ranks give the same answer; without it the answer is this process's own.
    """

    def __init__(self, agreement: Agreement | None = None) -> None:
        self.agreement = agreement

    def steps(self, batches: Iterable[T]) -> Iterator[T]:
        """``batches``, marked as a loop whose stops can wait for the next step boundary."""
        _REQUESTS.boundaries += 1
        try:
            yield from batches
        finally:
            _REQUESTS.boundaries -= 1
            if self.agreement is not None:
                self.agreement.finish()

    def requested(self) -> bool:
        """Whether the loop stops at this boundary."""
        here = _REQUESTS.signum is not None
        return here if self.agreement is None else self.agreement(here)

    def stop(self, step: int, total: int) -> NoReturn:
        """Stop the run after its state at ``step`` was saved."""
        if threading.current_thread() is threading.main_thread():
            signal.setitimer(signal.ITIMER_REAL, 0)
        raise RunInterrupted(_REQUESTS.signum or signal.SIGTERM, step=step, total=total)
