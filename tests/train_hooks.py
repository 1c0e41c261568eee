"""Epoch hooks for the training tests, named in $DH_TUNE_EPOCH_HOOKS as `train_hooks:<function>`.

They run inside the training loop, in Ray Train workers too (tests/ must then be on their PYTHONPATH).
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
from pathlib import Path

from dh_tune import fsio
from dh_tune.train.epoch_hooks import EpochEnd


class InjectedFailure(RuntimeError):
    """Raised on purpose to test recovery from a crashed worker."""


def write_rank_checksum(end: EpochEnd) -> None:
    """ranks/rank-<r>.json: a hash of this rank's weights, so DDP ranks can be checked to agree.

    Parameters only: BatchNorm statistics are rank-local until DDP broadcasts them at the next forward.
    """
    h = hashlib.sha256()
    for k, v in end.model.named_parameters():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    fsio.write_json(end.run_dir / "ranks" / f"rank-{end.rank}.json",
                    {"rank": end.rank, "epoch": end.epoch + 1, "sha256": h.hexdigest()})


def crash_once_after_first_epoch(end: EpochEnd) -> None:
    """Rank 0 crashes once, after the first epoch (and its checkpoint); a marker file keeps a restart going."""
    if end.epoch != 0 or end.rank != 0:
        return
    marker = end.run_dir / f".failure-injected-{end.epoch}"
    if not marker.exists():
        marker.touch()
        raise InjectedFailure(f"injected worker failure after epoch {end.epoch + 1}")


KILL_MARKERS = "DH_TUNE_TEST_KILL_MARKERS"
"""Environment variable naming a folder: `worker` and `trial` in it record the processes the hook below killed."""


def _claim(marker: Path, run_dir: Path) -> bool:
    """True for the one caller that creates `marker` (it records the run); False for everyone after."""
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.write(fd, str(run_dir).encode())
    os.close(fd)
    return True


def kill_search_processes_once(end: EpochEnd) -> None:
    """In search trials, rank 0 logs each epoch (epoch, pid) to epochs.log; the first trial to finish its second
    epoch has its Ray Train worker killed (SIGKILL), and the first other trial to finish its fourth epoch has the
    trial's own process killed, each once in the whole search (markers in $DH_TUNE_TEST_KILL_MARKERS)."""
    if end.rank != 0 or "trials" not in end.run_dir.parts:
        return
    with open(end.run_dir / "epochs.log", "a") as f:
        f.write(f"{end.epoch + 1} {os.getpid()}\n")
    markers = Path(os.environ[KILL_MARKERS])
    if end.epoch == 1 and _claim(markers / "worker", end.run_dir):
        os.kill(os.getpid(), signal.SIGKILL)
    worker_killed = (markers / "worker").read_text() if (markers / "worker").exists() else ""
    if end.epoch == 3 and worker_killed != str(end.run_dir) and _claim(markers / "trial", end.run_dir):
        trial = json.loads((end.run_dir.parent / "result.json").read_text())
        os.kill(int(trial["pid"]), signal.SIGKILL)
