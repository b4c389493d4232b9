"""Build of the optional compiled detector kernel; everything else is in pyproject.toml.

The extension is plain C99 against the CPython API (no numpy headers, no Cython): any C compiler
and the Python headers build it. ``optional=True``: where it cannot be built, the install still
succeeds and the detector runs its pure-Python reference (same scores, slower).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "twin.models.statistical._detector_kernel",
            sources=["twin/models/statistical/_detector_kernel.c"],
            # Bit-exact agreement with the Python reference: no FMA contraction, no fast-math.
            extra_compile_args=["-O2", "-ffp-contract=off", "-fno-fast-math"],
            optional=True,
        )
    ]
)
