"""Build hook for the optional compiled CPU MaxSim kernel; all package metadata lives in pyproject.toml.

The extension is optional: if it cannot be compiled (no C compiler, unsupported platform) the install still
succeeds and the "cpu" backend falls back to its pure torch path.
"""

import sys

from setuptools import Extension, setup

compile_args = ["-O3", "-std=c11", "-fno-strict-aliasing"] if sys.platform != "win32" else ["/O2"]
link_args = ["-pthread"] if sys.platform != "win32" else []
# One file per instruction family; each function carries its own target attributes, so no -m flag is
# global and the module runs on any x86-64 (the path is chosen per call from cpuid).
SOURCES = ["maxsim_cpu", "driver", "features", "kern_portable", "kern_avx2", "kern_avx512", "kern_amx"]
HEADERS = ["maxsim_cpu.h", "simd_avx512.h", "tile_avx2.inc", "tile_avx512.inc"]

setup(
    ext_modules=[
        Extension(
            "maxsim.kernels._maxsim_cpu",
            sources=[f"kernels/csrc/{name}.c" for name in SOURCES],
            depends=[f"kernels/csrc/{name}" for name in HEADERS],
            extra_compile_args=compile_args,
            extra_link_args=link_args,
            optional=True,
        )
    ]
)
