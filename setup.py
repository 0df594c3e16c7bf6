"""Only here because setuptools reads ``cffi_modules`` from setup() alone."""

from setuptools import setup

setup(cffi_modules=["native/build_shim.py:ffibuilder"])
