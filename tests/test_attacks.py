"""Hostile submissions: no pass without the math, no harm from a submission, no file lost.

Each file below is written as an attack on the grader: finding the reference gradients in memory,
patching torch or the checker, reading autograd's answer, exec'ing the packaged solution or a
classmate's file, printing fake results; and harm: reading secrets, the network, files, killing the
parent, leaving processes or files behind, memory through children, floods of output, parser bombs.
They run as a teacher runs a class: one `ninjagrad check --json` over the whole batch.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ninjagrad.check.exercises import get_exercise

pytestmark = pytest.mark.slow  # one batch of ~40 hostile files, judged in sandboxes: about a minute

OK = ("exact", "rounding")
SECRET = "sekret-7f3a9c"
TAG = "# ninjagrad exercise 2\n"


def isolated() -> bool:
    """Whether this machine gives a learner's process its namespaces (no network, read-only files)."""
    import torch  # noqa: F401 -- the learner's process forks from a process that has it

    from ninjagrad.check.sandbox import Limits, RemoteLearner

    learner = RemoteLearner(Limits(10, 0))
    try:
        return learner.isolated
    finally:
        learner.close()


def solution_path() -> str:
    """Where the installed package keeps exercise 2's solution (an attacker can find it)."""
    from importlib import resources

    return str(resources.files("ninjagrad") / "exercises" / "ex2_cross_entropy" / "solution.py")


def attacks(d: Path, port: int) -> dict[str, str]:
    """name -> source. Exercise 2 (dlogits) unless said otherwise; `good` is the honest classmate."""
    good = d / "good.py"
    home = Path(os.environ.get("HOME", "/root"))
    return {
        "good": get_exercise(2).read("solution.py"),
        # --- no pass without the math
        "gc_walk": TAG + "import sys\ngc = sys.modules['gc']\nfor o in gc.get_objects():\n"
                         "    if isinstance(o, torch.Tensor) and o.shape == logits.shape and o is not logits:\n"
                         "        dlogits = o.clone()\n",
        "gc_plain": TAG + "import gc\ndlogits = [o for o in gc.get_objects() if isinstance(o, torch.Tensor)][0]\n",
        "frames": TAG + "import sys\nf = sys._getframe(1)\nwhile f is not None:\n"
                        "    dlogits = f.f_locals.get('ref', None)\n    f = f.f_back\n",
        "patch_torch": TAG + "torch.equal = lambda a, b: True\ntorch.Tensor.__eq__ = lambda a, b: True\n"
                             "dlogits = torch.zeros_like(logits)\n",
        "builtins": TAG + "__builtins__['all'] = lambda xs: True\ndlogits = torch.zeros_like(logits)\n",
        "fake_output": TAG + "import os\nfake = '{\"file\": \"fake\", \"summary\": {\"ok\": true}}\\n'\nprint(fake)\n"
                             "os.write(1, fake.encode())\ndlogits = torch.zeros_like(logits)\n",
        "autograd_again": TAG + "lg = logits.clone().requires_grad_()\nF.cross_entropy(lg, Yb).backward()\n"
                                "dlogits = lg.grad\n",
        "exec_solution": TAG + f"exec(open({solution_path()!r}).read())\n",
        "copy_classmate": TAG + f"exec(open({str(good)!r}).read())\n",
        "read_classmate": TAG + f"dlogits = (F.softmax(logits, 1) - F.one_hot(Yb, 27)) / n if 'softmax' in "
                                f"open({str(good)!r}).read() else torch.zeros_like(logits)\n",
        "exit_early": TAG + "import os\nos._exit(0)\n",
        "float64": TAG + "dlogits = F.softmax(logits.double(), 1)\ndlogits[range(n), Yb] -= 1\ndlogits /= n\n",
        # --- no harm
        "secrets": TAG + "import os\nseen = str(dict(os.environ))\n"
                         "for p in ('/proc/self/environ', f'/proc/{os.getppid()}/environ',\n"
                         "          f'/proc/{os.getppid()}/cmdline'):\n"
                         "    try:\n        seen += open(p, 'rb').read().decode('latin-1')\n"
                         "    except OSError:\n        pass\n"
                         f"raise RuntimeError('LEAK' if {SECRET!r} in seen or 'good.py' in seen else 'SAFE')\n",
        "network": TAG + "import socket\n"
                         f"s = socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
                         "s.sendall(b'exfiltrated')\n",
        "files": TAG + "import os\n"
                       f"for p in ({str(d / 'pwned.txt')!r}, {str(home / 'ninjagrad-pwned.txt')!r}):\n"
                       "    try:\n        open(p, 'w').write('x')\n    except OSError:\n        pass\n"
                       f"try:\n    open({str(good)!r}, 'w').write('dlogits = 0')\nexcept OSError:\n    pass\n"
                       f"try:\n    os.remove({str(good)!r})\nexcept OSError:\n    pass\n"
                       "import ninjagrad.check.core as core\n"
                       "try:\n    open(core.__file__, 'a').write('# pwned')\nexcept OSError:\n    pass\n",
        "kill": TAG + "import os, signal\nfor pid in (os.getppid(), -1):\n"
                      "    try:\n        os.kill(pid, signal.SIGKILL)\n    except OSError:\n        pass\n",
        "orphans": TAG + "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
                         "        time.sleep(120)\n    os._exit(0)\n",
        "hogs": TAG + "for p in ('/dev/shm/ninjagrad-hog', '/tmp/ninjagrad-hog'):\n"
                      "    try:\n        open(p, 'wb').write(b'x' * (200 << 20))\n    except OSError:\n        pass\n",
        "stderr_flood": TAG + "import sys\nsys.stderr.write('x' * (40 << 20))\n"
                              "sys.stderr.write('y' * 200_000 + '\\n')\n"
                              "raise RuntimeError('z' * 200_000)\n",
        "no_alarm": TAG + "import signal\nsignal.setitimer(signal.ITIMER_REAL, 0)\n"
                          "signal.signal(signal.SIGALRM, signal.SIG_IGN)\nwhile True:\n    pass\n",
        "c_call": TAG + "a = torch.randn(6000, 6000)\nfor _ in range(1000):\n    a = a @ a\n",
        "nesting": TAG + "dlogits = " + "(" * 5000 + "1" + ")" * 5000 + "\n",
    }


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """The whole class checked at once, with a listener for the network attack and a secret in the env."""
    d = tmp_path_factory.mktemp("class")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    listener.setblocking(False)
    files = attacks(d, listener.getsockname()[1])
    for name, src in files.items():
        (d / f"{name}.py").write_text(src)
    (d / "fifo.py").unlink(missing_ok=True)
    os.mkfifo(d / "fifo.py")
    (d / "zero.py").symlink_to("/dev/zero")
    (d / "big_literal.py").write_text(TAG + "dlogits = 1" + "0" * (3 << 20) + "\n")
    names = list(files) + ["fifo", "zero", "big_literal"]
    env = {**os.environ, "NINJAGRAD_TEST_SECRET": SECRET}
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "ninjagrad", "check", *[str(d / f"{n}.py") for n in names], "--json",
                        "--jobs", "2", "--timeout", "4", "--memory-mb", "3000"],
                       capture_output=True, text=True, timeout=600, env=env, cwd=d)
    seconds = time.monotonic() - t0
    try:
        conn = listener.accept()
    except BlockingIOError:
        conn = None
    listener.close()
    lines = [json.loads(line) for line in p.stdout.splitlines()]
    return {"dir": d, "names": names, "proc": p, "lines": lines, "by": {Path(it["file"]).stem: it for it in lines},
            "conn": conn, "seconds": seconds}


def verdicts(item) -> list[str]:
    return [r["verdict"] for r in item.get("results", [])]


def test_every_file_is_reported_once_in_order(batch):
    assert [Path(it["file"]).stem for it in batch["lines"]] == batch["names"]
    assert all("fake" != it["file"] for it in batch["lines"])  # printed fake JSON never reaches the output
    assert batch["by"]["good"]["summary"]["ok"]
    assert batch["proc"].returncode == 2  # the unreadable files are usage errors: the worst status


@pytest.mark.parametrize("name", ["gc_walk", "gc_plain", "frames", "patch_torch", "builtins", "fake_output",
                                  "autograd_again", "exec_solution", "copy_classmate", "exit_early", "float64"])
def test_no_pass_without_the_math(batch, name):
    item = batch["by"][name]
    assert item.get("results") and not item["summary"]["ok"], item
    assert all(v not in OK for v in verdicts(item)), verdicts(item)


def test_named_verdicts(batch):
    by = {k: v for k, v in batch["by"].items()}
    for name in ("gc_plain", "frames", "patch_torch", "builtins", "autograd_again", "exec_solution", "exit_early"):
        assert "results" in by[name], by[name]
    assert verdicts(by["gc_plain"]) == ["tampering"] and "imports gc" in by["gc_plain"]["results"][0]["note"]
    assert verdicts(by["frames"]) == ["tampering"]
    assert verdicts(by["patch_torch"]) == ["tampering"] and "torch.equal" in by["patch_torch"]["tampering"]["what"]
    assert verdicts(by["builtins"]) == ["tampering"]
    assert verdicts(by["autograd_again"]) == ["uses-autograd"]
    assert verdicts(by["exec_solution"]) == ["tampering"]  # exec; and the solution file reads empty
    assert verdicts(by["exit_early"]) == ["tampering"]
    assert by["float64"]["results"][0]["diagnosis"]["kind"] == "other"  # a float64 gradient: dtype named


def test_reading_a_classmates_file_finds_nothing(batch):
    """The batch's submissions are hidden from every learner's process (absent, or empty in their place)."""
    if not isolated():
        pytest.skip("no user namespaces on this machine: other files are readable (the README says so)")
    item = batch["by"]["read_classmate"]
    assert verdicts(item) in (["error"], ["wrong"]), item["results"]


def test_no_secret_and_no_command_line_of_the_teacher(batch):
    (problem,) = batch["by"]["secrets"]["problems"]
    assert "SAFE" in problem["message"] and "LEAK" not in problem["message"]
    assert SECRET not in batch["proc"].stdout


def test_no_network(batch):
    if not isolated():
        pytest.skip("no user namespaces on this machine: the network is not isolated (the README says so)")
    assert batch["conn"] is None


def test_no_files_written_changed_or_deleted(batch):
    d = batch["dir"]
    assert not (d / "pwned.txt").exists()
    assert not (Path(os.environ.get("HOME", "/root")) / "ninjagrad-pwned.txt").exists()
    assert (d / "good.py").read_text() == get_exercise(2).read("solution.py")
    import ninjagrad.check.core as core
    assert "# pwned" not in Path(core.__file__).read_text()
    if isolated():  # /tmp is read-only to a learner, /dev/shm its own
        assert not Path("/dev/shm/ninjagrad-hog").exists() and not Path("/tmp/ninjagrad-hog").exists()


def test_killing_the_parent_or_everything_stops_only_itself(batch):
    item = batch["by"]["kill"]
    assert "results" in item or "error" in item  # reported; and every other file was too (first test)
    assert batch["by"]["good"]["summary"]["ok"]


def test_no_process_outlives_the_check(batch):
    time.sleep(0.5)
    d = str(batch["dir"])
    left = []
    for pid in os.listdir("/proc"):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().decode("latin-1")
        except OSError:
            continue
        if d in cmd:
            left.append((pid, cmd.replace("\0", " ")[:120]))
    assert not left, left


def test_limits_hold_from_outside(batch):
    by = batch["by"]
    assert "time limit" in by["no_alarm"]["error"]  # the alarm switched off and ignored: still stopped
    assert "time limit" in by["c_call"]["error"]  # stuck in a long C call: still stopped
    assert batch["seconds"] < 300


def test_floods_and_bombs_are_one_line_each(batch):
    by = batch["by"]
    floods = by["stderr_flood"]["problems"]  # 40 MB of stderr, then a 200 KB message: short lines
    assert any("RuntimeError" in f["message"] for f in floods) and all(len(f["message"]) < 1000 for f in floods)
    assert len(batch["proc"].stdout) < 2_000_000
    assert by["fifo"]["exit"] == 2 and "not a regular file" in by["fifo"]["error"]
    assert by["zero"]["exit"] == 2 and "not a regular file" in by["zero"]["error"]
    assert by["big_literal"]["exit"] == 2 and "MB" in by["big_literal"]["error"]
    assert verdicts(by["nesting"]) == ["error"]  # too deeply nested to parse: one error, nothing more


def test_memory_held_by_children_counts(tmp_path):
    """Children each under the per-process limit, together over it: stopped, and said so."""
    src = TAG + ("import os, time\npids = []\nfor _ in range(3):\n    pid = os.fork()\n    if pid == 0:\n"
                 "        x = bytearray(600 << 20)\n        for i in range(0, len(x), 4096):\n            x[i] = 1\n"
                 "        time.sleep(60)\n        os._exit(0)\n    pids.append(pid)\ntime.sleep(60)\n")
    (tmp_path / "hog.py").write_text(src)
    p = subprocess.run([sys.executable, "-m", "ninjagrad", "check", str(tmp_path / "hog.py"), "--json",
                        "--memory-mb", "1200", "--timeout", "30"], capture_output=True, text=True, timeout=300)
    (item,) = [json.loads(line) for line in p.stdout.splitlines()]
    assert "memory limit of 1200 MB" in item["error"], item


@pytest.mark.parametrize("value", ["nan", "inf", "-1"])
def test_impossible_timeouts_are_usage_errors(value, capsys):
    from ninjagrad.cli import main

    assert main(["check", "x.py", "--timeout", value]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--timeout" in err


def test_sigterm_ends_the_check_and_its_judges(tmp_path):
    (tmp_path / "loop.py").write_text(TAG + "while True:\n    pass\n")
    p = subprocess.Popen([sys.executable, "-m", "ninjagrad", "check", str(tmp_path / "loop.py"), "--timeout", "120"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(6)
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=30) == 128 + signal.SIGTERM
    time.sleep(0.5)
    left = [pid for pid in os.listdir("/proc") if pid.isdigit() and str(tmp_path) in
            Path(f"/proc/{pid}/cmdline").read_bytes().decode("latin-1", "replace")]
    assert not left
