"""The C extension of the fast engine (src/ninjagrad/engines/fast_step.c); everything else is in pyproject.toml."""
import sys

from setuptools import Extension, setup

# -O3 for the vectoriser. -fno-trapping-math and -fno-math-errno change no result: they tell the
# compiler that no code here reads floating-point exception flags or errno, without which it will
# not vectorise floorf (in exp32) or sqrt. The kernel picks its instruction set at run time (see
# fast_step.c), so the build targets the baseline and runs on any CPU of its architecture.
args = ["/O2"] if sys.platform == "win32" else ["-O3", "-std=gnu11", "-fno-trapping-math", "-fno-math-errno"]

setup(ext_modules=[Extension("ninjagrad.engines._fast_step", sources=["src/ninjagrad/engines/fast_step.c"],
                             depends=["src/ninjagrad/engines/fast_step_kernel.h"], extra_compile_args=args)])
