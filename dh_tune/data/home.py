"""The embedded default dataset: synthetic sign scenes generated once under DH_TUNE_HOME.

A newcomer without data still gets a real run; concurrent processes (Ray workers) share one
copy because generation happens under a file lock into a temporary folder renamed at the end.
"""
from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .synth import GENERATOR_VERSION, generate

logger = logging.getLogger(__name__)

try:
    import fcntl
except ImportError:  # not POSIX: generation still ends with an atomic rename
    fcntl = None  # type: ignore[assignment]


def dh_tune_home() -> Path:
    """Folder for caches and generated data: $DH_TUNE_HOME, default ~/.cache/dh-tune."""
    return Path(os.environ.get("DH_TUNE_HOME") or "~/.cache/dh-tune").expanduser()


@contextmanager
def _locked(lock_file: Path) -> Iterator[None]:
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with lock_file.open("a") as handle:
        if fcntl is not None:
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(handle, fcntl.LOCK_UN)


def default_dataset(imgsz: int = 416, train: int = 2000, val: int = 500, seed: int = 0,
                    home: str | Path | None = None) -> Path:
    """Data YAML of the synthetic default dataset, generating it on first use.

    Lives in <home>/datasets/signs-v<version>-<imgsz>px-<train>-<val>-s<seed>/ (home defaults to
    dh_tune_home()); later calls with the same arguments reuse it.
    """
    base = Path(home).expanduser() if home is not None else dh_tune_home()
    folder = base / "datasets" / f"signs-v{GENERATOR_VERSION}-{imgsz}px-{train}-{val}-s{seed}"
    data_yaml = folder / "data.yaml"
    if data_yaml.is_file():
        return data_yaml
    with _locked(folder.with_name(folder.name + ".lock")):
        if data_yaml.is_file():
            return data_yaml
        # Under the lock nobody else is writing: clear what an interrupted generation left.
        leftovers = [folder, *folder.parent.glob(f"{folder.name}.tmp-*")] if fcntl is not None else [folder]
        for leftover in leftovers:
            shutil.rmtree(leftover, ignore_errors=True)
        staging = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
        logger.info("generating the default synthetic dataset (%d+%d images, %d px) in %s", train, val, imgsz, folder)
        report = generate(staging, train=train, val=val, imgsz=imgsz, seed=seed)
        os.replace(staging, folder)
        logger.info("generated %d images in %.1f s", sum(report.images.values()), report.seconds)
    return data_yaml
