"""Is the data directory the mounted shared volume, and can we write to it?

The deployment creates SENTINEL_NAME once on the shared volume. An unmounted mount point is
an ordinary empty directory on the host, so "sentinel present" is how the app tells the real
volume from the place where the volume should be, and it never creates the sentinel itself.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path

SENTINEL_NAME = ".apptive-store"


@dataclass(frozen=True, slots=True)
class Readiness:
    ready: bool
    reason: str = ""


READY = Readiness(True)


def check_data_dir(data_dir: Path) -> Readiness:
    """Cheap enough for a probe every 2 s: one stat() and one access() call, no writes."""
    try:
        st = os.stat(data_dir / SENTINEL_NAME)
    except FileNotFoundError:
        return Readiness(False, f"sentinel {SENTINEL_NAME} missing in data directory")
    except NotADirectoryError:
        return Readiness(False, "data directory is not a directory")
    except OSError as exc:
        # ENOTCONN is what a dead GlusterFS FUSE client answers; name it for the operator.
        name = errno.errorcode.get(exc.errno or 0, "error")
        return Readiness(False, f"data directory not accessible ({name})")
    if not stat.S_ISREG(st.st_mode):
        return Readiness(False, f"sentinel {SENTINEL_NAME} is not a regular file")
    # access() answers for the real uid and sees read-only mounts (EROFS) too.
    if not os.access(data_dir, os.W_OK | os.X_OK):
        return Readiness(False, "data directory not writable")
    return READY
