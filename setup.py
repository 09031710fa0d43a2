"""The C extension of the fast engine (src/ninjagrad/engines/fast_step.c); everything else is in pyproject.toml."""
import sys

from setuptools import Extension, setup

ENGINES = "src/ninjagrad/engines/"

# -O3 for the vectoriser. -fno-trapping-math and -fno-math-errno change no result: they tell the
# compiler that no code here reads floating-point exception flags or errno, without which it will
# not vectorise floorf (in exp32) or sqrt. The kernels pick their instruction set at run time (see
# fast_step.c), so the build targets the baseline and runs on any CPU of its architecture. -pthread:
# the blocked step's thread pool.
if sys.platform == "win32":
    compile_args, link_args = ["/O2"], []
else:
    compile_args = ["-O3", "-std=gnu11", "-fno-trapping-math", "-fno-math-errno", "-pthread"]
    link_args = ["-pthread"]

setup(ext_modules=[Extension("ninjagrad.engines._fast_step", sources=[ENGINES + "fast_step.c"],
                             depends=[ENGINES + "fast_step_kernel.h", ENGINES + "fast_step_variants.h"],
                             extra_compile_args=compile_args, extra_link_args=link_args)])
