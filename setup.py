"""Build hook for the optional compiled CPU MaxSim kernel; all package metadata lives in pyproject.toml.

The extension is optional: if it cannot be compiled (no C compiler, unsupported platform) the install still
succeeds and the "cpu" backend falls back to its pure torch path.
"""

import sys

from setuptools import Extension, setup

compile_args = ["-O3", "-std=c11", "-fno-strict-aliasing"] if sys.platform != "win32" else ["/O2"]
link_args = ["-pthread"] if sys.platform != "win32" else []

setup(
    ext_modules=[
        Extension(
            "maxsim.kernels._maxsim_cpu",
            sources=["kernels/csrc/maxsim_cpu.c"],
            extra_compile_args=compile_args,
            extra_link_args=link_args,
            optional=True,
        )
    ]
)
