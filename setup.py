"""The C extension of the fast engine (src/ninjagrad/engines/fast_step.c); everything else is in pyproject.toml.

The extension is optional: without a C compiler (or when compiling fails) the install goes on without it,
saying so, and every engine but `fast` works; `ninjagrad train --engine fast` then says what is missing
and how to get it, and `ninjagrad train` falls back to the manual engine, saying why.
"""
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import BaseError, CCompilerError  # BaseError: distutils' DistutilsError

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


class OptionalBuildExt(build_ext):
    """Builds the extension when a C compiler can; otherwise warns and installs the rest."""

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except (CCompilerError, BaseError, OSError) as e:  # no compiler, a failed compile or link
            self.warn(f"ninjagrad: the fast engine's C step ({ext.name}) was not built: {e}. Everything else "
                      "installs and works; for `--engine fast`, install a C compiler (gcc or clang) and reinstall.")


setup(ext_modules=[Extension("ninjagrad.engines._fast_step", sources=[ENGINES + "fast_step.c"],
                             depends=[ENGINES + "fast_step_kernel.h", ENGINES + "fast_step_variants.h"],
                             extra_compile_args=compile_args, extra_link_args=link_args, optional=True)],
      cmdclass={"build_ext": OptionalBuildExt})
