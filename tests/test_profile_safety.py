"""A profile's checkpoint stays in its folder and is a regular file; infeasible profiles run only when asked.

Every refusal is one line (exit status 2 for `dh_tune.detect`, the project's error type for the API);
nothing that reads a checkpoint, a profile or a hash ever waits on a device or a pipe.
"""
from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from dh_tune.detect import main as detect_main
from dh_tune.export.dhnet_runtime import DeploymentError
from dh_tune.export.dhnet_runtime import file_sha256 as bundle_sha256
from dh_tune.messages import LineFormatter, loads_finite
from dh_tune.model.checkpoint import CheckpointError, file_sha256, load_checkpoint
from dh_tune.predict import Predictor
from dh_tune.search.export import export_profile
from dh_tune.search.records import BudgetResult, FrontPoint, TrialResult, TrialStatus
from dh_tune.threshold_profiles import ProfileError, load_profile, make_profile, save_profile

TORCH = {"name": "torch", "version": "2.13.0"}
CANDIDATE = {"imgsz": 64, "t1": 0.5, "t2": 0.5, "ap50": 0.9, "ap50_95": 0.7, "latency_ms": 5.0, "latency_p90_ms": 6.0,
             "exit_shares": (0.3, 0.3, 0.4), "gate_accuracy": (1.0, 1.0), "gate_recall": (1.0, 1.0), "mean_gmacs": 0.05,
             "trial_id": 0}
NEVER_HANG = pytest.mark.timeout(60, func_only=True)


@pytest.fixture(scope="module")
def checkpoint(untrained_checkpoint: Path) -> Path:
    """Nothing here needs accuracy: the untrained tiny DH-Net."""
    return untrained_checkpoint


@pytest.fixture
def image(tmp_path) -> Path:
    path = tmp_path / "images" / "a.jpg"
    path.parent.mkdir()
    cv2.imwrite(str(path), np.full((64, 64, 3), 127, np.uint8))
    return path


def _profile(checkpoint: Path, folder: Path, rel: str = "model.pt", *, copy: bool = True, feasible: bool = True,
             gate_accuracy: tuple[float, float] = (1.0, 1.0)) -> Path:
    """A profile in `folder` naming `checkpoint` at `rel` (copied there unless `copy` is False)."""
    folder.mkdir(parents=True, exist_ok=True)
    if copy:
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(checkpoint, folder / rel)
    doc = make_profile(device_name="Test CPU", table_digest="e" * 64, runtime=TORCH, budget_ms=10, feasible=feasible,
                       candidate=FrontPoint.from_dict({**CANDIDATE, "gate_accuracy": gate_accuracy}), metric="ap50", hyperparameters={},
                       checkpoint_rel=rel, checkpoint_sha256=file_sha256(checkpoint),
                       model={"scale": [0.33, 0.25], "nc": 2})
    return save_profile(doc, folder / "budget-10ms.json")


def _detect(capsys, *argv: str | Path) -> tuple[int, list[str]]:
    """Exit status of `dh_tune.detect` and its stderr lines."""
    code = detect_main([str(a) for a in argv])
    return code, capsys.readouterr().err.strip().splitlines()


def _refused(capsys, *argv: str | Path) -> str:
    """The one line `dh_tune.detect` refuses these arguments with (exit status 2)."""
    code, err = _detect(capsys, *argv)
    assert code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


@NEVER_HANG
def test_a_missing_folder_or_device_checkpoint_is_named_in_one_line(checkpoint, image, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    missing = _profile(checkpoint, tmp_path / "copied", "checkpoints/abc.pt", copy=False)  # JSON without its folder
    line = _refused(capsys, image, "--profile", missing, "--out", out)
    assert str(missing) in line and "checkpoints/abc.pt is missing" in line
    with pytest.raises(ProfileError, match=rf"^{missing}: its checkpoint .* is missing"):
        Predictor.from_profile(missing)

    folder = _profile(checkpoint, tmp_path / "folder", "checkpoints/abc.pt", copy=False)
    (folder.parent / "checkpoints" / "abc.pt").mkdir(parents=True)
    assert "abc.pt: is a folder, not a checkpoint" in _refused(capsys, image, "--profile", folder, "--out", out)
    with pytest.raises(CheckpointError, match="is a folder, not a checkpoint"):
        Predictor.from_profile(folder)

    fifo = _profile(checkpoint, tmp_path / "fifo", "checkpoints/abc.pt", copy=False)
    (fifo.parent / "checkpoints").mkdir()
    os.mkfifo(fifo.parent / "checkpoints" / "abc.pt")
    assert "abc.pt: not a regular file" in _refused(capsys, image, "--profile", fifo, "--out", out)
    with pytest.raises(CheckpointError, match="not a regular file"):
        Predictor.from_profile(fifo)

    good = _profile(checkpoint, tmp_path / "good")
    line = _refused(capsys, image, "--profile", good, "--checkpoint", "/dev/zero", "--out", out)
    assert line == "error: /dev/zero: not a regular file (a device, pipe or socket), refused as a checkpoint"
    with pytest.raises(CheckpointError, match="^/dev/zero: not a regular file"):
        Predictor.from_profile(good, "/dev/zero")
    assert not out.exists()


@NEVER_HANG
def test_hashing_refuses_devices_pipes_and_folders(tmp_path) -> None:
    os.mkfifo(tmp_path / "pipe")
    for path in (Path("/dev/zero"), tmp_path / "pipe", tmp_path):
        with pytest.raises(CheckpointError, match=f"^{path}: "):
            file_sha256(path)
        with pytest.raises(DeploymentError, match=f"^{path}: not a regular file"):
            bundle_sha256(path)  # the torch-free copy in every deployment folder


def test_checkpoints_are_refused_when_folders_devices_or_empty(checkpoint, image, tmp_path, capsys) -> None:
    os.mkfifo(tmp_path / "pipe.pt")
    for path, reason in ((tmp_path, "is a folder, not a checkpoint"), (Path("/dev/zero"), "not a regular file"),
                         (tmp_path / "pipe.pt", "not a regular file")):
        with pytest.raises(CheckpointError, match=f"^{path}: {reason}"):
            load_checkpoint(path)
        assert reason in _refused(capsys, image, "--checkpoint", path, "--out", tmp_path / "out")
    # A checkpoint emptied by an interrupted copy is named as empty, not as another checkpoint of the profile.
    empty = _profile(checkpoint, tmp_path / "empty")
    (empty.parent / "model.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"model.pt: empty file \(0 bytes\)"):
        Predictor.from_profile(empty)


def test_a_profile_checkpoint_stays_inside_the_profile_folder(checkpoint, image, tmp_path, capsys) -> None:
    shutil.copy2(checkpoint, tmp_path / "model.pt")
    (tmp_path / "elsewhere").mkdir()
    shutil.copy2(checkpoint, tmp_path / "elsewhere" / "x.pt")
    absolute = _profile(checkpoint, tmp_path / "absolute", str(tmp_path / "model.pt"), copy=False)
    parent = _profile(checkpoint, tmp_path / "parent", "../model.pt", copy=False)
    linked = _profile(checkpoint, tmp_path / "linked", "checkpoints/x.pt", copy=False)
    (linked.parent / "checkpoints").symlink_to(tmp_path / "elsewhere")
    for profile in (absolute, parent, linked):
        with pytest.raises(ProfileError, match=rf"^{profile}: its checkpoint path .* leads outside the profile's"):
            Predictor.from_profile(profile)
        line = _refused(capsys, image, "--profile", profile, "--out", tmp_path / "out")
        assert line.startswith(f"error: {profile}: its checkpoint path") and "outside" in line
    # A checkpoint the user names is theirs to name; the layout the search writes loads as it is.
    assert Predictor.from_profile(absolute, tmp_path / "model.pt").imgsz == 64
    table = SimpleNamespace(device_name="Test CPU", runtime=TORCH, digest=lambda: "e" * 64,
                            created_at="2026-11-26T10:00:00+00:00")
    trial = TrialResult("0", {}, TrialStatus.FINISHED, checkpoint=str(checkpoint))
    chosen = BudgetResult(10, True, "fits", FrontPoint.from_dict(CANDIDATE), trial)
    searched = export_profile(tmp_path / "search", chosen, metric="ap50", table=table)
    assert load_profile(searched.path).checkpoint_path().parent == searched.path.parent / "checkpoints"
    assert Predictor.from_profile(searched.path).thresholds == (0.5, 0.5)


def test_infeasible_profiles_run_only_when_allowed(checkpoint, image, tmp_path, capsys, caplog) -> None:
    profile = _profile(checkpoint, tmp_path / "p", feasible=False)
    out = tmp_path / "out"
    line = _refused(capsys, image, "--profile", profile, "--out", out)
    assert line.startswith(f"error: {profile}: infeasible") and "budget of 10 ms" in line
    assert "--allow-infeasible" in line
    assert not out.exists()
    code, err = _detect(capsys, image, "--profile", profile, "--allow-infeasible", "--out", out)
    assert code == 0 and err == [f"warning: {profile}: infeasible, no configuration meets its budget of 10 ms; "
                                 "running it anyway"]
    assert len(json.loads((out / "detections.json").read_text())) == 1

    with pytest.raises(ProfileError, match=rf"^{profile}: infeasible, .*allow_infeasible=True"):
        Predictor.from_profile(profile)
    caplog.clear()
    assert Predictor.from_profile(profile, allow_infeasible=True).imgsz == 64
    assert [LineFormatter().format(r) for r in caplog.records] == [
        f"warning: {profile}: infeasible, no configuration meets its budget of 10 ms; running it anyway"]
    # An exported folder carries its profile: refused before its graphs are opened.
    exported = tmp_path / "exported"
    exported.mkdir()
    shutil.copy2(profile, exported / "profile.json")
    with pytest.raises(ProfileError, match="infeasible"):
        Predictor.from_profile(exported)
    with pytest.raises(DeploymentError, match="no deploy.json"):
        Predictor.from_profile(exported, allow_infeasible=True)


def test_detect_refuses_a_folder_without_images(checkpoint, tmp_path, capsys) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("no images here")
    for folder in (empty, tmp_path / "notes"):
        line = _refused(capsys, folder, "--checkpoint", checkpoint, "--out", tmp_path / "out")
        assert line.startswith(f"error: {folder}: no images in this folder")
    assert not (tmp_path / "out").exists()


def test_detect_flags_that_do_not_go_together_are_argparse_errors(checkpoint, image, tmp_path, capsys) -> None:
    for argv, text in (([], "give --checkpoint or --profile"),
                       (["--checkpoint", checkpoint, "--runtime", "openvino"], "--runtime openvino runs a profile"),
                       (["--profile", tmp_path / "p.json", "--imgsz", "64"], "--thresholds and --imgsz come from")):
        with pytest.raises(SystemExit) as stop:
            detect_main([str(image), *map(str, argv), "--out", str(tmp_path / "out")])
        assert stop.value.code == 2 and text in capsys.readouterr().err.strip().splitlines()[-1]


def test_an_internal_error_in_detect_keeps_its_traceback(checkpoint, image, tmp_path, monkeypatch) -> None:
    def broken(*args, **kwargs):
        raise ValueError("an internal mistake, not the user's")

    monkeypatch.setattr(Predictor, "from_checkpoint", broken)
    with pytest.raises(ValueError, match="internal mistake"):
        detect_main([str(image), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "out")])


def test_detections_json_is_strict_json_when_gates_do_not_run(checkpoint, image, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    code, _ = _detect(capsys, image, "--checkpoint", checkpoint, "--thresholds", "0", "0", "--imgsz", "64",
                      "--out", out)
    results = loads_finite((out / "detections.json").read_text())  # no NaN: JSON has none
    assert code == 0 and results[0]["gate_scores"] == [None, None]
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # no temporary left behind


@NEVER_HANG
def test_profiles_are_saved_as_strict_json_and_read_only_from_regular_files(checkpoint, tmp_path) -> None:
    profile = _profile(checkpoint, tmp_path / "p", gate_accuracy=(math.nan, math.nan))  # gates never scored
    assert load_profile(profile).doc["expected"]["gate_accuracy"] == [None, None]
    assert sorted(p.name for p in profile.parent.iterdir()) == ["budget-10ms.json", "model.pt"]
    os.mkfifo(tmp_path / "pipe.json")
    for path, reason in ((tmp_path, "is a folder, not a profile"), (tmp_path / "pipe.json", "not a regular file")):
        with pytest.raises(ProfileError, match=f"^{path}: {reason}"):
            load_profile(path)


class _Payload:
    """Unpickling this would create the canary file: it must never happen."""

    def __init__(self, canary: Path) -> None:
        self.canary = canary

    def __reduce__(self):
        return (Path.touch, (self.canary,))


def test_a_pickled_payload_never_runs_as_a_checkpoint_or_a_profile(tmp_path, image, capsys) -> None:
    import pickle

    import torch

    canary = tmp_path / "payload-ran"
    evil_pt = tmp_path / "evil.pt"
    torch.save({"format": "dh-tune-checkpoint", "version": 1, "model": _Payload(canary)}, evil_pt)
    evil_json = tmp_path / "evil.json"
    evil_json.write_bytes(pickle.dumps(_Payload(canary)))
    with pytest.raises(CheckpointError, match="not a readable dh-tune checkpoint"):
        load_checkpoint(evil_pt)
    with pytest.raises(ProfileError):
        load_profile(evil_json)
    out = tmp_path / "out"
    assert detect_main(["--checkpoint", str(evil_pt), str(image), "--out", str(out)]) == 2
    assert detect_main(["--profile", str(evil_json), str(image), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and str(evil_pt) in err[0] and str(evil_json) in err[1]
    assert not canary.exists()
    pickle.loads(evil_json.read_bytes())  # the payload is live: unpickling it (never done above) runs it
    assert canary.exists()
