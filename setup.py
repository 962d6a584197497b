"""Builds the optional native OTLP decoder (otel_ai/decode/_otlp.c, and _otlp_json.c for OTLP/JSON);
metadata is in pyproject.toml.

Without a working C compiler the install still succeeds: otel-ai then uses the Python
reference decoder, says so in `otel-ai check` and at startup, and this build prints why.
"""
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

WARNING = ("otel-ai: the native OTLP decoder was not built ({reason}); the Python decoder will be "
           "used instead (correct, several times slower). Install a C compiler and the Python "
           "headers, then reinstall, to build it.")


class OptionalBuildExt(build_ext):
    """A failed compile is a warning, not a failed install."""

    def run(self):
        try:
            super().run()
        except Exception as exc:  # no compiler at all, or a platform distutils cannot handle
            self._warn(exc)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:  # a compiler that fails on this file
            self._warn(exc)

    @staticmethod
    def _warn(exc):
        print("\n" + WARNING.format(reason=f"{type(exc).__name__}: {exc}") + "\n", file=sys.stderr)


setup(
    ext_modules=[Extension("otel_ai.decode._otlp", ["otel_ai/decode/_otlp.c"],
                           extra_compile_args=["-O3", "-std=c11"], optional=True),
                 # Canonical OTLP/JSON -> protobuf for the reader above (replay, OTLP/HTTP JSON).
                 Extension("otel_ai.decode._otlp_json", ["otel_ai/decode/_otlp_json.c"],
                           extra_compile_args=["-O3", "-std=c11"], optional=True)],
    cmdclass={"build_ext": OptionalBuildExt},
)
