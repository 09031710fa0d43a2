"""The one numba decorator the fast engine's kernels use.

Compiled machine code is cached on disk so that only the first run on a machine pays for the
compilation (a few seconds). numba writes its cache beside the source file, or, when the package
is installed somewhere read-only, in the user's cache folder (~/.cache/numba, or NUMBA_CACHE_DIR).
Where neither can be written, the kernels are compiled in memory at every start instead.
numba checks only the cached function's own file for changes: the kernels in fast_blocked.py
inline fast_vecmath.py and are compiled with this file's options, so fast_blocked.py carries both
files' hashes (INLINED_SHA256, kept current by a test) and any edit here or there recompiles them.
"""
from __future__ import annotations

import numba


FASTMATH = {"contract"}


def jit(fn=None, **options):
    """`numba.njit` with an on-disk cache when one is available, NumPy's error model, and of all the
    `fastmath` licences only "contract".

    error_model="numpy": x / 0 gives inf like NumPy instead of raising ZeroDivisionError; the check
    that raising needs is a branch per division, and a branch stops LLVM from vectorising the loop.

    "contract" lets LLVM fuse a * b + c into one fused multiply-add (one rounding instead of two: the
    polynomials in exp and tanh are chains of them); measured ~0.8 µs of a ~33 µs step. The other
    licences stay off on purpose: reassociating the reductions and turning divisions into
    reciprocals would make the engine's numbers depend on the CPU's vector width. The kernels are
    written so that they vectorise without them.
    """
    def wrap(f):
        try:
            return numba.njit(cache=True, error_model="numpy", fastmath=FASTMATH, **options)(f)
        except RuntimeError:  # "cannot cache function ...: no locator available"
            return numba.njit(cache=False, error_model="numpy", fastmath=FASTMATH, **options)(f)

    return wrap if fn is None else wrap(fn)
