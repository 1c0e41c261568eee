"""One search per folder at a time: an exclusive lock on OUT/.search.lock that holds the owner's pid.

The lock is an `flock` on the file, which the kernel drops when its holder dies (even by SIGKILL), so a
lock left by a killed search is stale by construction and the next search simply takes it.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from ..messages import InputError

LOCK_FILE = ".search.lock"


class FolderLocked(InputError):
    """Another live search holds the folder (one line: the folder and the holder's pid and host)."""


def _holder(path: Path) -> str:
    try:
        doc = json.loads(path.read_text(encoding="utf-8") or "{}")
        return f"pid {doc['pid']} on {doc['host']}, started {doc['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


@contextlib.contextmanager
def search_lock(out: Path) -> Iterator[Path]:
    """Hold OUT's lock for the block; FolderLocked at once (no waiting) when a live search holds it."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FolderLocked(f"{out}: another search is running in this folder ({_holder(path)}); "
                               "wait for it or give another --out") from None
        doc = {"pid": os.getpid(), "host": socket.gethostname(),
               "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(doc) + "\n").encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the flock; the file stays, empty of meaning once unlocked
