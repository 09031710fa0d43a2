"""How a training run shows its progress: a bar on a terminal, a plain line every few seconds elsewhere.

Both give the step, the loss, the rate and the time left. The rate is smoothed over recent wall time
(see Rate), so the time left follows what the run does now: it is neither thrown about by one slow
chunk (an evaluation, a checkpoint) nor stuck on the rate of the run's first seconds. When output is
a pipe or a file (a log, `| tee`, a CI job) a bar would print nothing until the end; a plain line
every PLAIN_EVERY seconds says instead that the run is alive and how far it has come.
"""
from __future__ import annotations

import math
import sys
import time

TAU = 10.0  # seconds: the smoothed rate forgets a past rate by a factor e every TAU seconds
SAMPLE_EVERY = 0.2  # seconds between two samples of the rate (a sample costs a few microseconds)
BAR_EVERY = 0.2  # seconds between two redraws of the bar
PLAIN_EVERY = 5.0  # seconds between two plain progress lines


class Rate:
    """Steps per second, smoothed exponentially over wall time.

    Each sample (step s at time t) gives the rate since the last one, r = ds/dt, and moves the
    estimate towards it by the weight that dt carries over a memory of tau seconds:
        rate <- rate + (1 - exp(-dt/tau)) (r - rate)
    so samples count by the time they cover, however irregularly they come.
    """

    def __init__(self, tau: float = TAU):
        self.tau = tau
        self.value: float | None = None  # steps per second; None until two samples
        self.last: tuple[int, float] | None = None  # (step, time) of the last sample

    def add(self, step: int, now: float):
        if self.last is not None:
            dt = now - self.last[1]
            if dt <= 0:
                return
            r = (step - self.last[0]) / dt
            self.value = r if self.value is None else self.value + (1 - math.exp(-dt / self.tau)) * (r - self.value)
        self.last = (step, now)

    def seconds_left(self, steps_left: int) -> float | None:
        if not self.value or self.value <= 0:
            return None
        return steps_left / self.value


def clock_text(seconds: float | None) -> str:
    """h:mm:ss, or -:--:-- when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "-:--:--"
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class Progress:
    """What the training loop reports to after each chunk of steps. This one shows nothing: for
    --no-progress and for the processes of a data-parallel run other than the one that writes."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, step: int, loss: float):
        """The run has done `step` steps; the last one's minibatch loss was `loss`."""


class Shown(Progress):
    """Samples the rate at most every SAMPLE_EVERY seconds, and shows the state every `every` seconds
    and at the last step (`show`, in the subclasses)."""

    def __init__(self, total: int, start: int, every: float, clock=time.monotonic):
        self.total = total
        self.every = every
        self.clock = clock
        self.rate = Rate()
        now = clock()
        self.rate.add(start, now)
        self.next_sample = now + SAMPLE_EVERY
        self.next_show = now + every

    def update(self, step, loss):
        now = self.clock()
        last = step >= self.total
        if now < self.next_sample and not last:
            return
        self.next_sample = now + SAMPLE_EVERY
        self.rate.add(step, now)
        if now >= self.next_show or last:
            self.next_show = now + self.every
            self.show(step, loss)

    def show(self, step: int, loss: float):
        raise NotImplementedError


class PlainProgress(Shown):
    """One line every `every` seconds (and one at the end), flushed at once: for logs and pipes.

        step 12,800/200,000 (6.4%)  loss 2.3120  2,731 steps/s  left 0:01:08
    """

    def __init__(self, total: int, start: int = 0, every: float = PLAIN_EVERY, write=None, clock=time.monotonic):
        super().__init__(total, start, every, clock)
        self.write = write if write is not None else self._print

    @staticmethod
    def _print(line: str):
        print(line, flush=True)

    def show(self, step, loss):
        rate = self.rate.value or 0.0
        self.write(f"step {step:,}/{self.total:,} ({100 * step / self.total:.1f}%)  loss {loss:.4f}  "
                   f"{rate:,.0f} steps/s  left {clock_text(self.rate.seconds_left(self.total - step))}")


class BarProgress(Shown):
    """rich's bar on a terminal, its time left from the smoothed rate."""

    def __init__(self, total: int, start: int = 0, console=None, clock=time.monotonic):
        # here: rich.progress takes ~0.2 s to import, which only a terminal's bar needs
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn
        from rich.progress import Progress as RichProgress

        super().__init__(total, start, BAR_EVERY, clock)
        self.bar = RichProgress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("{task.fields[rate]} steps/s"),
                                TextColumn("left {task.fields[left]}"), console=console, transient=False)
        self.task = self.bar.add_task("train", total=total, completed=start, loss=float("nan"), rate="-",
                                      left=clock_text(None))

    def __enter__(self):
        self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        return self.bar.__exit__(*exc)

    def show(self, step, loss):
        rate = self.rate.value
        self.bar.update(self.task, completed=step, loss=loss, rate="-" if rate is None else f"{rate:,.0f}",
                        left=clock_text(self.rate.seconds_left(self.total - step)))


def make_progress(total: int, start: int, show: bool, console=None) -> Progress:
    """The bar when output is a terminal, plain lines when it is not, nothing when `show` is False."""
    if not show:
        return Progress()
    terminal = console.is_terminal if console is not None else sys.stdout.isatty()
    if terminal:
        return BarProgress(total, start, console)
    return PlainProgress(total, start)
