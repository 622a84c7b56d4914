"""Build script: compiles the Cython kernels in src/mimird/_fast/.

Set MIMIRD_CYTHON_DEBUG=1 for line tracing and bounds checks (slow, for debugging and coverage).
"""

import os
from pathlib import Path

import numpy
from Cython.Build import cythonize
from setuptools import Extension, find_packages, setup

HERE = Path(__file__).parent
DEBUG = os.environ.get("MIMIRD_CYTHON_DEBUG") == "1"

directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "cdivision": True,
    "initializedcheck": DEBUG,
    "embedsignature": True,
}
macros = [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]
if DEBUG:
    directives["linetrace"] = True
    macros.append(("CYTHON_TRACE_NOGIL", "1"))

extensions = [
    Extension(
        f"mimird._fast.{pyx.stem}",
        [str(pyx.relative_to(HERE))],
        include_dirs=[numpy.get_include(), "src/mimird/_fast"],
        define_macros=macros,
        extra_compile_args=["-O3"] if not DEBUG else ["-O0", "-g"],
    )
    for pyx in sorted((HERE / "src/mimird/_fast").glob("*.pyx"))
]

setup(
    package_dir={"": "src", "mimird.grammar": "grammar"},
    packages=find_packages("src") + ["mimird.grammar"],
    package_data={"mimird._fast": ["*.pxd", "*.pyi", "py.typed"], "mimird.grammar": ["*.lark"]},
    ext_modules=cythonize(extensions, compiler_directives=directives, quiet=True),
    zip_safe=False,
)
