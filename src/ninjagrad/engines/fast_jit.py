"""The one numba decorator the fast engine's kernels use.

Compiled machine code is cached on disk so that only the first run on a machine pays for the
compilation (a few seconds). numba writes its cache beside the source file, or, when the package
is installed somewhere read-only, in the user's cache folder (~/.cache/numba, or NUMBA_CACHE_DIR).
Where neither can be written, the kernels are compiled in memory at every start instead.
numba checks only the cached function's own file for changes, by a hash of its contents: the
kernels in fast_kernels.py inline fast_vecmath.py, so fast_kernels.py carries that file's hash
(VECMATH_SHA256, kept current by a test) and any edit there recompiles them.
"""
from __future__ import annotations

import numba


def jit(fn=None, **options):
    """`numba.njit` with an on-disk cache when one is available, NumPy's error model, `fastmath` off.

    error_model="numpy": x / 0 gives inf like NumPy instead of raising ZeroDivisionError; the check
    that raising needs is a branch per division, and a branch stops LLVM from vectorising the loop.

    fastmath stays off on purpose: it would let LLVM reassociate the reductions and replace the
    division in batchnorm with reciprocals, so the engine's numbers would depend on the CPU's
    vector width. The kernels are written so that they vectorise without it.
    """
    def wrap(f):
        try:
            return numba.njit(cache=True, error_model="numpy", **options)(f)
        except RuntimeError:  # "cannot cache function ...: no locator available"
            return numba.njit(cache=False, error_model="numpy", **options)(f)

    return wrap if fn is None else wrap(fn)
