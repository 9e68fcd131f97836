"""The installed distribution's version (read from its metadata, so it is stated once, in pyproject.toml)."""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sbn-ppl")
except PackageNotFoundError:  # a source tree on sys.path, not installed
    __version__ = "0+unknown"
