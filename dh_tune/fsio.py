"""Files written whole or not at all: a temporary file in the same folder, flushed, then renamed.

A kill at any moment leaves either the previous file or the new one, never a truncated one. Reads
are bounded and refuse anything that is not a regular file (a folder, /dev/zero, a FIFO). Names
such as a device's become folder-safe with `slug`.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from .messages import InputError

MAX_DOCUMENT_BYTES = 64 * 1024 * 1024
"""Largest JSON or YAML document the project reads (profiles, tables, state are kilobytes)."""


class UnreadableFile(InputError):
    """A path that is not a regular file, or a document larger than the project ever writes."""


def _umask() -> int:
    """This process's umask, read without changing it where the system says it (Linux /proc)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _file_mode(path: Path) -> int:
    """The mode `path` has (when it exists) or would get from open(): 0666 less the umask."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return 0o666 & ~_umask()


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success it is fsynced and renamed onto `path`.

    For writers that take a file name (torch.save, np.savez, savefig); the temporary keeps the
    suffix so that writers choosing a format by suffix still choose the right one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        os.chmod(tmp, _file_mode(path))  # mkstemp makes 0600; the file keeps the mode a plain write gives
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temporary file next to `path` for writing; renamed onto `path` when the block ends."""
    encoding = None if "b" in mode else "utf-8"
    with atomic_path(path) as tmp, open(tmp, mode, encoding=encoding) as f:
        yield f
        f.flush()


def write_text(path: str | Path, text: str) -> Path:
    """Write `text` (UTF-8) atomically."""
    with atomic_open(path) as f:
        f.write(text)
    return Path(path)


def write_json(path: str | Path, doc: Any, indent: int | None = 1, sort_keys: bool = False,
               allow_nan: bool = True) -> Path:
    """Write `doc` as JSON atomically. Documents others read (profiles, latency tables) pass
    allow_nan=False: a NaN or infinity is then refused (ValueError) instead of written."""
    return write_text(path, json.dumps(doc, indent=indent, sort_keys=sort_keys, allow_nan=allow_nan) + "\n")


def check_regular(path: str | Path, what: str = "file") -> Path:
    """Return `path` when it is an existing regular file; UnreadableFile names it otherwise."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise UnreadableFile(f"{path}: no such {what}") from None
    except OSError as exc:
        raise UnreadableFile(f"{path}: cannot read {what} ({exc.strerror})") from None
    if stat.S_ISDIR(mode):
        raise UnreadableFile(f"{path}: is a folder, not a {what}")
    if not stat.S_ISREG(mode):
        raise UnreadableFile(f"{path}: not a regular file (a device, pipe or socket), refused as a {what}")
    return path


def read_text(path: str | Path, what: str = "file", limit: int = MAX_DOCUMENT_BYTES) -> str:
    """Read a regular UTF-8 file of at most `limit` bytes (UnreadableFile otherwise, naming the file)."""
    path = check_regular(path, what)
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise UnreadableFile(f"{path}: larger than {limit // (1024 * 1024)} MiB, not a {what}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise UnreadableFile(f"{path}: not UTF-8 text, not a {what}") from None


def sha256_of(path: str | Path) -> str:
    """SHA-256 of a regular file's bytes (UnreadableFile for folders and devices, which would never end)."""
    path = check_regular(path)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def copy_verified(src: str | Path, dst: str | Path, sha256: str) -> Path:
    """Make `dst` a copy of `src` whose SHA-256 is `sha256`: kept when it already matches, otherwise
    (missing, truncated, altered) copied again atomically and checked."""
    dst = Path(dst)
    if dst.is_file() and sha256_of(dst) == sha256:
        return dst
    with atomic_path(dst) as tmp:
        with open(check_regular(src), "rb") as fin, open(tmp, "wb") as fout:
            h = hashlib.sha256()
            for chunk in iter(lambda: fin.read(1 << 20), b""):
                h.update(chunk)
                fout.write(chunk)
        if h.hexdigest() != sha256:
            raise UnreadableFile(f"{src}: its SHA-256 is not the one recorded ({sha256[:16]}...); the file changed")
    return dst


def replace_dir(tmp: str | Path, out: str | Path) -> Path:
    """Put the finished folder `tmp` (a sibling of `out`) in place of `out`, removing an older `out` first."""
    import shutil

    out = Path(out)
    Path(tmp).chmod(0o755)
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


def save_figure(fig: Any, path: str | Path, dpi: int = 110) -> Path:
    """Save a matplotlib figure atomically (the format follows the suffix of `path`)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format=Path(path).suffix.lstrip(".") or None)
    return Path(path)


def slug(name: str) -> str:
    """A folder-safe form of a device name: 'Intel(R) Xeon(R) ... (2 threads)' -> 'intel-xeon-...-2-threads'."""
    s = re.sub(r"\((r|tm)\)", "", name.lower())
    return re.sub(r"[^a-z0-9]+", "-", s).strip("-")[:80] or "device"
