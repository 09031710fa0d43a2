"""Progress: a smoothed rate, plain lines when output is not a terminal, the bar on one."""
import contextlib
import io
import math
import re

import pytest

from ninjagrad.cli import main
from ninjagrad.progress import BarProgress, PlainProgress, Progress, Rate, clock_text, make_progress


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_rate_weights_samples_by_the_time_they_cover():
    r = Rate(tau=10.0)
    r.add(0, 0.0)
    r.add(1000, 1.0)  # 1000 steps/s
    assert r.value == pytest.approx(1000)
    r.add(1000 + 500 * 10, 11.0)  # 500 steps/s for 10 s: one tau, so the estimate moves 1 - 1/e of the way
    assert r.value == pytest.approx(500 + 500 / math.e)
    r.add(1000 + 500 * 10, 11.0)  # no time passed: ignored
    assert r.value == pytest.approx(500 + 500 / math.e)


def test_rate_forgets_a_slow_start():
    """The ETA follows the recent rate: 20 s at 100 steps/s, then 60 s at 1000 steps/s."""
    r, step = Rate(tau=10.0), 0
    r.add(0, 0.0)
    for t in range(1, 81):
        step += 100 if t <= 20 else 1000
        r.add(step, float(t))
    assert r.value == pytest.approx(1000, rel=0.01)  # a whole-run average would say 775
    assert r.seconds_left(100_000) == pytest.approx(100, rel=0.01)


def test_rate_is_steady_when_one_chunk_is_slow():
    """A 2-second evaluation in a run at 1000 steps/s moves the estimate by a fraction, not 100x."""
    r, step = Rate(tau=10.0), 0
    r.add(0, 0.0)
    for t in range(1, 31):
        step += 1000
        r.add(step, t * 1.0)
    r.add(step + 10, 32.0)  # 10 steps in 2 s
    assert 750 < r.value < 1000


def test_clock_text():
    assert clock_text(3725.4) == "1:02:05" and clock_text(None) == "-:--:--" and clock_text(float("inf")) == "-:--:--"


def test_plain_progress_prints_every_few_seconds_and_at_the_end():
    clock, lines = Clock(), []
    p = PlainProgress(total=10_000, every=5.0, write=lines.append, clock=clock)
    with p:
        for step in range(100, 10_001, 100):  # 100 steps every 0.1 s: 1000 steps/s, 10 s in all
            clock.t = step / 1000
            p.update(step, 2.5)
    assert len(lines) == 2  # at 5 s and at the last step
    assert re.match(r"step 5,[0-2]00/10,000 \(5[0-2]\.0%\)  loss 2\.5000  1,000 steps/s  left 0:00:0[45]$", lines[0])
    assert lines[-1].startswith("step 10,000/10,000 (100.0%)")


def test_make_progress_chooses_by_the_output():
    assert type(make_progress(10, 0, False)) is Progress
    quiet_console = type("C", (), {"is_terminal": False})()
    assert isinstance(make_progress(10, 0, True, quiet_console), PlainProgress)
    from rich.console import Console

    assert isinstance(make_progress(10, 0, True, Console(force_terminal=True, file=io.StringIO())), BarProgress)


def test_train_prints_progress_lines_when_output_is_not_a_terminal(small_words, tmp_path):
    out = io.StringIO()  # not a terminal
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = main(["train", "--data", str(small_words), "--steps", "300", "--n-hidden", "16", "--engine", "manual",
                     "--out", str(tmp_path / "run"), "--samples", "0", "--device", "cpu"])
    assert code == 0
    lines = [ln for ln in out.getvalue().splitlines() if re.match(r"step \d", ln)]
    assert lines and lines[-1].startswith("step 300/300 (100.0%)  loss ")  # the last line at the end, at least
    with contextlib.redirect_stdout(out := io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        main(["train", "--data", str(small_words), "--steps", "30", "--n-hidden", "16", "--engine", "manual",
              "--out", str(tmp_path / "quiet"), "--samples", "0", "--device", "cpu", "--no-progress"])
    assert not [ln for ln in out.getvalue().splitlines() if re.match(r"step \d", ln)]
