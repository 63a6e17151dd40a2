"""Compiled hot paths; everything else about the package is in pyproject.toml.

Cython compiles the modules listed in media_server/native.py to C extensions: plain-Python
modules typed by the .pxd beside each (the annotations in the .py are mypy's and are ignored
here), and .pyx modules that have a plain-Python twin (media_server/webrtc/frame_send_c.pyx).
`pip install` builds them; scripts/setup.sh rebuilds them in place after a source changed.
Uncompiled, the same modules run as Python, only slower.
"""

import runpy

from Cython.Build import cythonize
from setuptools import setup

# by path: the build environment has no courtcast to import
SOURCES = runpy.run_path("media_server/native.py")["SOURCES"]

setup(
    ext_modules=cythonize(
        list(SOURCES),
        language_level=3,
        quiet=True,
        compiler_directives={"annotation_typing": False},
    )
)
