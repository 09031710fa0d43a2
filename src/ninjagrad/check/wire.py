"""Messages between the judge and a sandboxed learner process: framed, and safe to read.

A message is a dict of plain values: None, bools, numbers, strings, tensors, and lists, tuples and
dicts of those. It travels as torch.save bytes behind an 8-byte length. The judge reads what the
learner's process sends with torch.load(weights_only=True), which builds tensors and containers and
nothing else: no code runs, whatever the learner's process writes. Anything else a learner's
variable holds (a function, an object of its own) travels as a marker naming its type.
"""
from __future__ import annotations

import io
import math
import socket
import struct
import types

import torch

MAX_FRAME = 1 << 30  # bytes: one message at most (the forward's values of a large notebook fit)
MAX_DEPTH = 8  # containers nested deeper travel as markers
MODULES = {"torch": torch, "F": torch.nn.functional, "nn": torch.nn}


class Gone(Exception):
    """The other side closed the connection (the learner's process ended, or was ended)."""


class Opaque:
    """A learner's value that is not plain data (a function, a custom object): its type's name."""

    def __init__(self, typename: str):
        self.typename = typename

    def __repr__(self):
        return f"<{self.typename}>"


def pack(value, depth: int = 0):
    """A learner's value as plain data: tensors as plain CPU tensors, containers item by item."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"__float__": repr(value)}
    if value is Ellipsis:
        return {"__ellipsis__": True}
    if torch.is_tensor(value):
        return value.detach().cpu().as_subclass(torch.Tensor).clone().contiguous()
    if isinstance(value, types.ModuleType):
        return {"__module__": value.__name__}
    if depth < MAX_DEPTH and type(value) in (list, tuple):
        return type(value)(pack(v, depth + 1) for v in value)
    if depth < MAX_DEPTH and type(value) is dict and all(isinstance(k, str) for k in value):
        return {"__dict__": {k: pack(v, depth + 1) for k, v in value.items()}}
    if type(value) is range:
        return {"__range__": [value.start, value.stop, value.step]}
    return {"__opaque__": type(value).__name__}


def unpack(value, modules: bool = False):
    """Plain data back as values: markers become Ellipsis, ranges, Opaque (modules only if asked:
    the learner's side imports what the judge names)."""
    if isinstance(value, dict):
        if "__ellipsis__" in value:
            return Ellipsis
        if "__float__" in value:
            return float(value["__float__"])
        if "__range__" in value:
            return range(*value["__range__"])
        if "__module__" in value:
            name = value["__module__"]
            if modules and name in {m.__name__ for m in MODULES.values()}:
                return next(m for m in MODULES.values() if m.__name__ == name)
            return Opaque("module")
        if "__dict__" in value:
            return {k: unpack(v, modules) for k, v in value["__dict__"].items()}
        if "__opaque__" in value:
            return Opaque(str(value["__opaque__"]))
        return {k: unpack(v, modules) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(unpack(v, modules) for v in value)
    return value


def send(sock: socket.socket, message: dict):
    buf = io.BytesIO()
    torch.save(message, buf)
    data = buf.getvalue()
    sock.sendall(struct.pack("<Q", len(data)) + data)


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    chunks, got = [], 0
    while got < n:
        chunk = sock.recv(min(n - got, 1 << 20))
        if not chunk:
            raise Gone()
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def recv(sock: socket.socket) -> dict:
    """One message, read safely: only tensors and plain containers can come out of it."""
    (n,) = struct.unpack("<Q", _recv_exactly(sock, 8))
    if n > MAX_FRAME:
        raise Gone()
    try:
        message = torch.load(io.BytesIO(_recv_exactly(sock, n)), weights_only=True, map_location="cpu")
    except Gone:
        raise
    except Exception:  # noqa: BLE001 -- anything that is not plain data ends the conversation
        raise Gone() from None
    if not isinstance(message, dict):
        raise Gone()
    return message
