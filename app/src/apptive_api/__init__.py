"""apptive-api: per-user JSON records in SQLite files on a shared volume."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("apptive-api")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
