"""ninjagrad: hand-written backpropagation for the makemore models."""

__version__ = "0.1.0"


def load_ipython_extension(ip):
    """`%load_ext ninjagrad`: the `%%ninjagrad` cell magic (see ninjagrad.check.magic)."""
    from .check.magic import load_ipython_extension as load
    load(ip)


def __getattr__(name):
    """`ninjagrad.cmp` and `ninjagrad.check_backward`, imported on first use so `import ninjagrad` stays cheap."""
    if name in ("cmp", "check_backward"):
        from .check import api
        return getattr(api, name)
    raise AttributeError(f"module 'ninjagrad' has no attribute {name!r}")
