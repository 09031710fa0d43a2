"""A learner's statements in a process of their own, which holds no answer and can do no harm.

The judge (the worker process checking one file) forks this process right after importing torch,
before it computes any reference gradient, so the fork's memory holds none. The learner's process:

- starts a new session (its own process group), dies with the judge (PR_SET_PDEATHSIG), and has
  its inherited file descriptors closed but for its socket to the judge; stdin and stdout go
  nowhere, stderr to a capped file in its scratch folder;
- runs in new user, network, mount and PID namespaces when the kernel allows them: no network,
  the file system read-only but for its tmpfs scratch folder (its working directory and TMPDIR)
  and /dev/shm, the batch's submission files and the package's solutions hidden (an empty file
  mounted over each), a /proc that shows only its own processes, and every process it starts ends
  with it;
- has limits the kernel enforces (address space per process, CPU seconds, file size, no core
  dumps), and limits the judge enforces from outside: wall time while it works, and memory summed
  over it and all its children, checked every 50 ms, killed past either;
- starts from an empty environment (PATH only) in its scratch folder.

What it sends back is read with wire.recv (plain data only). `isolation()` says which of these
this machine gives; without user namespaces there is no network, file-system or PID isolation,
and the learner's code can read and write what the user can (the README says so).
"""
from __future__ import annotations

import ctypes
import mmap
import os
import resource
import shutil
import signal
import socket
import struct
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field

from . import runner, wire
from .learner import LearnerSide
from .procs import descendants, resident_mb
from .runner import Events, Failure, Program
from .submission import Cell, Submission, code_cell

PR_SET_PDEATHSIG, PR_SET_DUMPABLE = 1, 4
CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x20000, 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 32, 4096, 16384, 1 << 18
FILE_LIMIT = 64 << 20  # bytes one file may grow to (stderr included)
STDERR_KEPT = 2000  # characters of the learner's stderr kept for a crash's message
WATCH_EVERY = 0.05  # seconds between the judge's looks at time and memory


@dataclass
class Limits:
    timeout: float  # wall seconds the learner's code may work, all requests together
    memory_mb: int  # for the learner's process and all its children together (0: none)


@dataclass
class Ending:
    """Why the learner's process ended, when it did before the judge was done."""
    reason: str = ""  # "time", "memory", "exit"
    status: int | None = None  # exit status, or -signal
    where: str | None = None  # the statement it was running
    stderr: str = ""


def _libc():
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


LIBC = _libc()


def _prctl(option: int, value: int):
    if LIBC is not None and sys.platform.startswith("linux"):
        LIBC.prctl(option, value, 0, 0, 0)


def protect_judge():
    """The judge's own memory and descriptors out of reach of same-user processes (/proc/PID/mem,
    /proc/PID/fd), and the judge ending with its parent."""
    _prctl(PR_SET_DUMPABLE, 0)
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


# --- namespaces ---------------------------------------------------------------------------------------

def _mount(source, target, fstype, flags) -> bool:
    return LIBC.mount(source and source.encode(), target.encode(), fstype and fstype.encode(), flags, None) == 0


def enter_namespaces(scratch: str, hide: list[str]) -> bool:
    """New user, network, mount and PID namespaces with the file system read-only; False when the
    kernel refuses them (then nothing is changed)."""
    if LIBC is None or not sys.platform.startswith("linux"):
        return False
    uid, gid = os.getuid(), os.getgid()
    if LIBC.unshare(CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWNS | CLONE_NEWPID) != 0:
        return False
    try:
        with open("/proc/self/setgroups", "w") as f:
            f.write("deny")
        with open("/proc/self/uid_map", "w") as f:
            f.write(f"{uid} {uid} 1")
        with open("/proc/self/gid_map", "w") as f:
            f.write(f"{gid} {gid} 1")
    except OSError:
        return False
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    mounts = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mounts.append(line.split()[4].replace("\\040", " "))
    writable = [scratch, "/dev/shm"]  # tmpfs: private, freed when the namespace ends; /tmp stays readable
    for target in writable:
        if os.path.isdir(target):
            _mount("tmpfs", target, "tmpfs", 0)
    for target in sorted(set(mounts), key=len):  # every other mount read-only
        if any(target == w or target.startswith(w + "/") for w in writable) or \
                target.startswith(("/proc", "/sys", "/dev")):
            continue
        _mount(target, target, None, MS_BIND | MS_REC)
        _mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY)
    for path in hide:  # an empty file (or folder) over each
        stand_in = os.path.join(scratch, ".empty_dir" if os.path.isdir(path) else ".empty")
        if os.path.isdir(path):
            os.makedirs(stand_in, exist_ok=True)
        else:
            open(stand_in, "w").close()
        _mount(stand_in, path, None, MS_BIND)
    return True


# --- the learner's process -------------------------------------------------------------------------------

def _vm_size() -> int:
    """This process's address space now, in bytes (torch alone maps a good part of a gigabyte)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) << 10
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _limit(memory_mb: int, timeout: float):
    """Kernel limits: no core dumps, files up to FILE_LIMIT, CPU seconds, and address space. Memory
    itself (resident, the process and its children together) is the judge's to watch; the address
    space limit only stops a runaway allocation between two looks, above what is mapped already."""
    for res, value in ((resource.RLIMIT_CORE, 0), (resource.RLIMIT_FSIZE, FILE_LIMIT),
                       (resource.RLIMIT_CPU, int(2 * timeout + 10))):
        try:
            resource.setrlimit(res, (value, value))
        except (ValueError, OSError):
            pass
    if memory_mb > 0:
        try:
            limit = _vm_size() + (4 * memory_mb << 20)
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        except (ValueError, OSError):
            pass


def _learner_main(sock: socket.socket, limits: Limits, hide: list[str], scratch: str, progress: mmap.mmap) -> int:
    os.setsid()
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    err = os.open(os.path.join(scratch, "stderr"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(err, 2)
    keep = {0, 1, 2, sock.fileno()}
    for fd in range(3, 1024):  # the judge's pipes and files: not the learner's to write to
        if fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass
    isolated = enter_namespaces(scratch, hide)
    if isolated:
        pid = os.fork()  # pid 1 of the new PID namespace: when it ends, every process it started ends
        if pid:
            _, status = os.waitpid(pid, 0)
            return os.waitstatus_to_exitcode(status)
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        _mount("proc", "/proc", "proc", 0)
    _limit(limits.memory_mb, limits.timeout)
    os.chdir(scratch)
    os.environ.clear()
    os.environ.update(PATH="/usr/bin:/bin", HOME=scratch, TMPDIR=scratch)
    serve(sock, progress, isolated)
    return 0


def serve(sock: socket.socket, progress: mmap.mmap, isolated: bool):
    """The learner's side of the conversation: one request, one answer (a forced run exchanges a
    value and its replacement at each judged gradient on the way)."""
    def at(u):
        progress.seek(0)
        progress.write(struct.pack("<qq", -1 if u.cell is None else u.cell, u.line))

    runner.PROGRESS = at
    side = LearnerSide()
    wire.send(sock, {"op": "ready", "isolated": isolated})
    while True:
        msg = wire.recv(sock)
        op = msg["op"]
        if op == "quit":
            return
        if op == "read":
            cells = [code_cell(i, text, msg["path"]) if kind == "code" else Cell(i, kind, text)
                     for i, kind, text in msg["cells"]]
            side.read(Submission(msg["path"], cells, msg["notebook"]))
            wire.send(sock, {"op": "ok"})
        elif op == "space":
            side.set_space(msg["space"], wire.unpack(msg["ns32"], modules=True),
                           None if msg["ns64"] is None else wire.unpack(msg["ns64"], modules=True))
            wire.send(sock, {"op": "ok"})
        elif op == "setup":
            wire.send(sock, {"op": "spec", "spec": _spec(side.setup, msg["words"])})
        elif op == "loop_setup":
            wire.send(sock, {"op": "spec", "spec": _spec(side.loop_setup, msg["k"], msg["words"])})
        elif op == "forward":
            side.set_forward(msg["space"], msg["values32"], msg["values64"])
            wire.send(sock, {"op": "ok"})
        elif op == "forced":
            prog = side.program(msg["ref"], msg["names"])

            def exchange(dvar, i, v32, v64):
                wire.send(sock, {"op": "value", "dvar": dvar, "unit": i, "v32": wire.pack(v32),
                                 "v64": wire.pack(v64)})
                reply = wire.recv(sock)
                return reply["f32"], reply["f64"], reply["scale"]

            events = side.forced(msg["space"], prog, msg["dvars"], _given(msg["given"]), exchange)
            wire.send(sock, {"op": "events", "failures": [(i, _failure(f)) for i, f in events.failures],
                             "failed64": sorted(events.failed64),
                             "aliased": {d: [i, h] for d, (i, h) in events.aliased.items()}})
        elif op == "plain":
            prog = side.program(msg["ref"], msg["names"])
            values, failures = side.plain(msg["space"], prog, msg["dvars"], _given(msg["given"]))
            wire.send(sock, {"op": "plain", "values": {d: wire.pack(v) for d, v in values.items()},
                             "failures": failures})
        elif op == "call":
            prog = side.program(msg["ref"], msg["names"])
            grads, err = side.call(msg["space"], prog, msg["fname"], tuple(msg["params"]), msg["float64"])
            packed = None if grads is None else {k: wire.pack(v) for k, v in grads.items()}
            wire.send(sock, {"op": "call", "grads": packed, "error": None if err is None else _failure(err)})


def _spec(setup, *args) -> dict:
    """A setup's forward, or why there is none (a failure of the learner's side, said, not a crash)."""
    try:
        return setup(*args)
    except Exception as e:  # noqa: BLE001 -- anything the notebook's code provokes is reported
        return {"error": f"the notebook's setup could not be run ({type(e).__name__}: {str(e)[:200]})"}


def _given(given: dict) -> dict:
    return {d: (pair[0], pair[1]) for d, pair in given.items()}


def _failure(f: Failure) -> list:
    return [f.cell, f.line, f.message, f.name]


def _failure_of(x) -> Failure:
    cell, line, message, name = x
    return Failure(cell if isinstance(cell, int) else None, int(line), str(message),
                   name if isinstance(name, str) else None)


# --- the judge's side -----------------------------------------------------------------------------------

@dataclass
class RemoteLearner:
    """The judge's handle on a sandboxed learner's process (the same methods as LocalLearner)."""
    limits: Limits
    hide: list[str] = field(default_factory=list)

    def __post_init__(self):
        self.scratch = tempfile.mkdtemp(prefix="ninjagrad-learner-")
        self.progress = mmap.mmap(-1, 16)
        self.sock, child = socket.socketpair()
        self.ending: Ending | None = None
        self.busy = 0.0  # seconds the learner's code has worked on requests
        self.since: float | None = None  # when the request in flight was sent
        self.pid = os.fork()
        if self.pid == 0:  # the learner's process
            self.sock.close()
            code = 1
            try:
                code = _learner_main(child, self.limits, self.hide, self.scratch, self.progress)
            except BaseException:  # noqa: BLE001 -- whatever happens, this process ends here
                traceback.print_exc()  # into the capped stderr file, for the crash's message
            os._exit(code)
        child.close()
        self.lock = threading.Lock()
        self.watch = threading.Thread(target=self._watch, daemon=True)
        self.watch.start()
        hello = self._recv()
        self.isolated = bool(hello.get("isolated"))

    # --- limits, from outside ---------------------------------------------------------------------

    def _watch(self):
        while self.ending is None:
            time.sleep(WATCH_EVERY)
            if self.ending is not None:
                return
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                return
            if pid:
                self._end("exit", os.waitstatus_to_exitcode(status))
                return
            since = self.since
            if since is not None and self.busy + time.monotonic() - since > self.limits.timeout:
                self._end("time")
                return
            if self.limits.memory_mb > 0 and resident_mb(descendants(self.pid)) > self.limits.memory_mb:
                self._end("memory")
                return

    def _end(self, reason: str, status: int | None = None):
        with self.lock:
            if self.ending is not None:
                return
            self.progress.seek(0)
            cell, line = struct.unpack("<qq", self.progress.read(16))
            where = None if line <= 0 else (f"cell {cell}, line {line}" if cell >= 0 else f"line {line}")
            self.ending = Ending(reason, status, where)
        self.kill()

    def kill(self):
        for pid in reversed(descendants(self.pid)):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except OSError:
            pass

    def _reap(self, wait: float) -> bool:
        """Whether the learner's process has ended (noting how), waiting up to `wait` seconds."""
        deadline = time.monotonic() + wait
        while True:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # the watcher reaped it: it notes how, in a moment
                while self.ending is None and time.monotonic() < deadline + 0.5:
                    time.sleep(0.01)
                return True
            if pid:
                self._end("exit", os.waitstatus_to_exitcode(status))
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)

    def _gone(self):
        """The connection broke: the process ended (or is ending); note how, then give up the request."""
        self._done()
        self._reap(2.0)
        raise wire.Gone()

    def close(self):
        self._reap(0)
        with self.lock:
            finished = self.ending is None
            if finished:
                self.ending = Ending("done")
        if finished:
            try:
                wire.send(self.sock, {"op": "quit"})
            except OSError:
                pass
        self.kill()
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass
        if self.ending.reason != "done":
            self.ending.stderr = self.stderr()
        self.sock.close()
        shutil.rmtree(self.scratch, ignore_errors=True)

    def stderr(self) -> str:
        try:
            with open(os.path.join(self.scratch, "stderr"), "rb") as f:
                f.seek(max(0, os.path.getsize(f.name) - STDERR_KEPT))
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    # --- requests ----------------------------------------------------------------------------------

    def _send(self, message: dict):
        if self.ending is not None:
            raise wire.Gone()
        if self.since is None:
            self.since = time.monotonic()
        try:
            wire.send(self.sock, message)
        except OSError:
            self._gone()

    def _recv(self) -> dict:
        try:
            return wire.recv(self.sock)
        except (OSError, wire.Gone):
            self._gone()

    def _done(self):
        if self.since is not None:
            self.busy += time.monotonic() - self.since
            self.since = None

    def _ask(self, message: dict, answer: str) -> dict:
        self._send(message)
        reply = self._recv()
        self._done()
        if reply.get("op") != answer:
            raise wire.Gone()
        return reply

    def at(self, space: str) -> At:
        return At(self, space)

    def read(self, submission):
        cells = [(c.index, c.kind, c.text) for c in submission.cells]
        self._ask({"op": "read", "path": submission.path, "notebook": submission.notebook, "cells": cells}, "ok")

    def set_space(self, space: str, ns32: dict, ns64: dict | None):
        self._ask({"op": "space", "space": space, "ns32": {k: wire.pack(v) for k, v in ns32.items()},
                   "ns64": None if ns64 is None else {k: wire.pack(v) for k, v in ns64.items()}}, "ok")

    def setup(self, words: str) -> dict:
        return self._ask({"op": "setup", "words": words}, "spec")["spec"]

    def loop_setup(self, k: int, words: str) -> dict:
        return self._ask({"op": "loop_setup", "k": k, "words": words}, "spec")["spec"]

    def set_forward(self, space: str, values32: dict, values64: dict):
        self._ask({"op": "forward", "space": space, "values32": values32, "values64": values64}, "ok")

    def forced(self, prog: Program, dvars: list[str], given: dict, exchange, space: str = "main") -> Events:
        self._send({"op": "forced", "space": space, "ref": prog.ref, "names": prog.dvars, "dvars": dvars,
                    "given": {d: [p[0], p[1]] for d, p in given.items()}})
        while True:
            msg = self._recv()
            if msg.get("op") == "value":
                f32, f64, scale = exchange(str(msg["dvar"]), int(msg["unit"]), wire.unpack(msg["v32"]),
                                           wire.unpack(msg["v64"]))
                self._send({"op": "forced", "f32": f32, "f64": f64, "scale": float(scale)})
            elif msg.get("op") == "events":
                self._done()
                return Events([(int(i), _failure_of(f)) for i, f in msg["failures"]], set(msg["failed64"]),
                              {str(d): (int(v[0]), bool(v[1])) for d, v in msg["aliased"].items()})
            else:
                raise wire.Gone()

    def plain(self, prog: Program, dvars: list[str], given: dict, space: str = "main") -> tuple[dict, int]:
        reply = self._ask({"op": "plain", "space": space, "ref": prog.ref, "names": prog.dvars, "dvars": dvars,
                           "given": {d: [p[0], p[1]] for d, p in given.items()}}, "plain")
        return {d: wire.unpack(v) for d, v in reply["values"].items()}, int(reply["failures"])

    def call(self, prog: Program, fname: str, params: tuple[str, ...], float64: bool = False, space: str = "main"):
        reply = self._ask({"op": "call", "space": space, "ref": prog.ref, "names": prog.dvars, "fname": fname,
                           "params": list(params), "float64": float64}, "call")
        err = None if reply["error"] is None else _failure_of(reply["error"])
        grads = None if reply["grads"] is None else {str(k): wire.unpack(v) for k, v in reply["grads"].items()}
        return grads, err


class At:
    """A RemoteLearner's runs from one space (a notebook's own forward, exercise 4's loop, ...)."""

    def __init__(self, learner: RemoteLearner, space: str):
        self.learner, self.space = learner, space

    def forced(self, prog: Program, dvars: list[str], given: dict, exchange) -> Events:
        return self.learner.forced(prog, dvars, given, exchange, self.space)

    def plain(self, prog: Program, dvars: list[str], given: dict) -> tuple[dict, int]:
        return self.learner.plain(prog, dvars, given, self.space)

    def call(self, prog: Program, fname: str, params: tuple[str, ...], float64: bool = False):
        return self.learner.call(prog, fname, params, float64, self.space)


def exercises_folder() -> str:
    """The package's exercises, solutions included: hidden from a learner's process."""
    from importlib import resources

    return str(resources.files("ninjagrad") / "exercises")


def isolation() -> str:
    """What a learner's process gets on this machine, in words (for reports)."""
    if LIBC is None or not sys.platform.startswith("linux"):
        return "process only (no namespaces on this platform)"
    return "namespaces (no network, read-only files, own PIDs)"
