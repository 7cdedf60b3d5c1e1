"""refimpl's version, read from the installed package's metadata.

The one definition is ``version`` in ``pyproject.toml``; ``pip install``
(also ``-e``) records it, and everything in refimpl that names its version
(``refimpl.__version__``, checkpoint fingerprints, golden vectors, results)
imports it from here. A module of its own, so that submodules can import it
while ``refimpl/__init__.py`` is still importing them.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("refimpl")
except PackageNotFoundError as exc:  # pragma: no cover - a source tree that was never installed
    raise ImportError("refimpl is not installed, so its version is unknown: run "
                      "`python -m pip install -e .` in the source tree") from exc
