"""Epoch hooks for the training tests, named in $DH_TUNE_EPOCH_HOOKS as `train_hooks:<function>`.

They run inside the training loop, in Ray Train workers too (tests/ must then be on their PYTHONPATH).
"""
from __future__ import annotations

import hashlib

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
