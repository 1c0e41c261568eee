"""Atomic writes, bounded reads of regular files only, verified copies; trial results that cannot be read."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from dh_tune import fsio
from dh_tune.search.trial_docs import ended_trials, mark_interrupted


def test_a_failed_write_leaves_the_previous_file_whole_and_no_temporary(tmp_path) -> None:
    path = tmp_path / "state.json"
    fsio.write_json(path, {"a": 1})
    with pytest.raises(RuntimeError):
        with fsio.atomic_open(path) as f:
            f.write('{"a": 2, "b": ')  # a writer dying halfway
            raise RuntimeError("killed")
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_written_files_get_the_mode_a_plain_write_gives_and_keep_a_changed_one(tmp_path) -> None:
    old = os.umask(0o027)
    try:
        plain = tmp_path / "plain.json"
        plain.write_text("{}")
        fresh = fsio.write_json(tmp_path / "fresh.json", {})
        assert fresh.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777 == 0o640
        fresh.chmod(0o444)
        fsio.write_json(fresh, {"a": 1})
        assert fresh.stat().st_mode & 0o777 == 0o444
    finally:
        os.umask(old)


def test_non_finite_numbers_are_never_written(tmp_path) -> None:
    with pytest.raises(ValueError):
        fsio.write_json(tmp_path / "x.json", {"t": float("nan")}, allow_nan=False)
    assert not (tmp_path / "x.json").exists()


def test_folders_devices_and_oversized_files_are_refused_in_one_line(tmp_path) -> None:
    with pytest.raises(fsio.UnreadableFile, match="is a folder"):
        fsio.read_text(tmp_path, "profile")
    with pytest.raises(fsio.UnreadableFile, match="not a regular file"):
        fsio.sha256_of("/dev/zero")  # would never end if read
    with pytest.raises(fsio.UnreadableFile, match="no such"):
        fsio.check_regular(tmp_path / "missing.pt", "checkpoint")
    big = tmp_path / "big.json"
    big.write_bytes(b" " * 2048)
    with pytest.raises(fsio.UnreadableFile, match="larger than"):
        fsio.read_text(big, "profile", limit=1024)
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(fsio.UnreadableFile, match="not a regular file"):
        fsio.read_text(tmp_path / "fifo")  # would block forever if opened


def test_a_copy_that_does_not_match_its_checksum_is_replaced(tmp_path) -> None:
    src = tmp_path / "best.pt"
    src.write_bytes(os.urandom(10_000))
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    dst = tmp_path / "profiles" / "ckpt.pt"
    fsio.copy_verified(src, dst, sha)
    dst.write_bytes(dst.read_bytes()[:100])  # truncated by a kill
    fsio.copy_verified(src, dst, sha)
    assert dst.read_bytes() == src.read_bytes()
    src.write_bytes(b"changed")
    dst.unlink()
    with pytest.raises(fsio.UnreadableFile, match="SHA-256"):
        fsio.copy_verified(src, dst, sha)
    assert not dst.exists()


def test_figures_are_saved_whole_in_the_format_of_their_suffix(tmp_path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    png = fsio.save_figure(fig, tmp_path / "front.png")
    plt.close(fig)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and [p.name for p in tmp_path.iterdir()] == ["front.png"]


def _trial(out: Path, name: str, **doc) -> Path:
    folder = out / "trials" / name
    folder.mkdir(parents=True)
    fsio.write_json(folder / "result.json", {"trial_id": name, **doc})
    return folder / "result.json"


def test_trial_results_count_each_point_once_and_skip_what_cannot_be_read(tmp_path, caplog) -> None:
    p = {"gate_lambda": 0.3, "eps": 4.0}
    _trial(tmp_path, "a", params=p, status="finished", started=1.0)
    _trial(tmp_path, "b", params=dict(p), status="finished", started=2.0)  # the same point drawn again
    _trial(tmp_path, "c", params={"gate_lambda": 0.5, "eps": 3.0}, status="running", started=3.0)
    damaged = _trial(tmp_path, "d", params={"gate_lambda": 0.7, "eps": 3.0}, status="finished", started=4.0)
    damaged.write_text(damaged.read_text()[:20])
    assert [d.trial_id for d in ended_trials(tmp_path)] == ["a"]
    assert [r.levelname for r in caplog.records if f"{damaged}: unreadable trial result" in r.getMessage()] == ["WARNING"]
    (changed,) = mark_interrupted(tmp_path)
    assert changed.trial_id == "c"
    assert json.loads((tmp_path / "trials" / "c" / "result.json").read_text())["status"] == "interrupted"


def test_a_new_trial_takes_over_the_checkpointed_training_of_an_interrupted_one_with_its_point(tmp_path) -> None:
    from dh_tune.search.trial_docs import adopt_interrupted

    p = {"gate_lambda": 0.3, "eps": 4.0}
    _trial(tmp_path, "early", params=p, status="interrupted", started=1.0)  # killed before its first checkpoint
    (tmp_path / "trials" / "early" / "train").mkdir()
    _trial(tmp_path, "late", params=p, status="interrupted", started=2.0)
    (tmp_path / "trials" / "late" / "train" / "weights").mkdir(parents=True)
    (tmp_path / "trials" / "late" / "train" / "weights" / "last.pt").write_bytes(b"checkpoint")
    _trial(tmp_path, "other", params={"gate_lambda": 0.5, "eps": 4.0}, status="interrupted", started=3.0)
    new = tmp_path / "trials" / "new"
    new.mkdir()
    assert adopt_interrupted(tmp_path, new, {"gate_lambda": 0.5, "eps": 4.0}) is None  # nothing of its own to resume
    assert adopt_interrupted(tmp_path, new, dict(p)) == "late"
    assert (new / "train" / "weights" / "last.pt").read_bytes() == b"checkpoint"
    assert not (tmp_path / "trials" / "late" / "train").exists()
    late = json.loads((tmp_path / "trials" / "late" / "result.json").read_text())
    assert late["status"] == "interrupted" and late["resumed_by"] == "new"
    assert adopt_interrupted(tmp_path, new, dict(p)) is None  # it has a training now


def test_a_resumed_search_first_trains_the_paper_point_its_first_points_and_what_the_kill_interrupted(
        tmp_path) -> None:
    from dh_tune.search.outer import paper_point, points_to_evaluate
    from dh_tune.search.space import Dimension

    dims = [Dimension("gate_lambda", "float", 0.01, 1.0, True), Dimension("eps", "float", 2.0, 6.0)]
    paper = paper_point(dims)
    _trial(tmp_path, "a", params={"gate_lambda": 0.5, "eps": 3.0}, status="finished", started=1.0)
    _trial(tmp_path, "b", params={"gate_lambda": 0.7, "eps": 3.0}, status="interrupted", started=2.0)
    _trial(tmp_path, "c", params={"gate_lambda": 0.9, "eps": 3.0}, status="interrupted", started=3.0,
           resumed_by="d")  # already taken over
    _trial(tmp_path, "e", params={"gate_lambda": 0.8}, status="interrupted", started=4.0)  # another space
    first = [{"gate_lambda": 0.5, "eps": 3.0}, {"gate_lambda": 0.6, "eps": 3.0}]
    assert points_to_evaluate(tmp_path, dims, first) == [paper, {"gate_lambda": 0.6, "eps": 3.0},
                                                         {"gate_lambda": 0.7, "eps": 3.0}]
