"""embedserve's version, as /info and `embedserve --version` report it."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    VERSION = version("embedserve")
except PackageNotFoundError:  # running from a source tree without an install
    VERSION = "0.0.0"
