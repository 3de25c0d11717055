"""The package's version, from its installed metadata: one leaf every module can import."""

from importlib import metadata

try:
    __version__ = metadata.version("minicastling")
except metadata.PackageNotFoundError:  # imported from a clone that pip never installed
    __version__ = "0.1.0+source"
