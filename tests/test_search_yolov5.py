"""`python -m dh_tune.search --from-yolov5 BEST.pt --data DATA.yaml`: a checkpoint as YOLOv5's own trainer writes it
is the base and the static reference, the trials train its gates on the frozen detector, every profile, checkpoint
and MLflow run names the source, a re-run resumes, and a dataset with other classes is refused before training."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
import yaml
from yolov5_fake import yolov5_checkpoint

import mlflow
from dh_tune.model.checkpoint import load_checkpoint
from dh_tune.search.__main__ import main as search_main
from dh_tune.threshold_profiles import load_profile

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def yolov5_best(trained_tiny, tmp_path_factory) -> Path:
    """The trained tiny detector saved as YOLOv5's train.py saves best.pt (pickled fp16 modules, `opt.imgsz`)."""
    ckpt = load_checkpoint(trained_tiny)
    root = tmp_path_factory.mktemp("yolov5")
    return yolov5_checkpoint(root, root / "best.pt", ckpt["ema"] or ckpt["model"], list(ckpt["names"]),
                             tuple(ckpt["model_args"]["scale"]), imgsz=128)


@pytest.fixture
def tiny_gates_pipeline(tiny_pipeline_doc, tiny_dataset, tmp_path) -> Path:
    """The tiny pipeline, two gates-only epochs per trial, no deployment sizes named (they follow the checkpoint)."""
    doc = tiny_pipeline_doc(tiny_dataset, epochs=2)
    doc["search"].update({"max_concurrent": 1, "gate_epochs": 2, "deploy_imgsz": [],
                          "early_stop": {"scheduler": "none"}})
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _detector(state: dict) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if not k.startswith("gates.")}


def test_search_from_yolov5_trains_only_the_gates_and_names_the_source(
        yolov5_best, tiny_dataset, tiny_gates_pipeline, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("DH_TUNE_HOME", str(tmp_path / "home"))
    out, uri = tmp_path / "search", f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["--from-yolov5", str(yolov5_best), "--data", tiny_dataset, "--budget-ms", "60",
            "--pipeline", str(tiny_gates_pipeline), "--out", str(out), "--tracking-uri", uri]
    assert search_main(args) == 0
    printed = capsys.readouterr().out
    sha = hashlib.sha256(yolov5_best.read_bytes()).hexdigest()
    assert f"Imported YOLOv5: best.pt (sha256 {sha[:12]}" in printed and "AP50:95 -" not in printed

    (imported,) = (out / "imported").glob("*.pt")
    base = load_checkpoint(imported)
    assert base["source"]["sha256"] == sha and not (out / "base").exists()  # the import is the base: nothing trained
    docs = [json.loads(p.read_text()) for p in sorted((out / "trials").glob("*/result.json"))]
    assert len(docs) == 2 and all(d["status"] == "finished" and d["freeze"] == "detector" for d in docs)
    for d in docs:
        trained = load_checkpoint(d["checkpoint"])
        assert trained["source"]["sha256"] == sha
        for weights in ("model", "ema"):
            got, want = _detector(trained[weights]), _detector(base["model"])
            assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want), weights
        assert not torch.equal(trained["model"]["gates.0.fc2.weight"], base["model"]["gates.0.fc2.weight"])

    sizes = {128 * f for f in (0.5, 0.75, 1.0)}  # deployment sizes around the size it was trained at
    assert {int(p.stem.split("-")[1]) for p in (out / "devices").glob("table-*.json")} == sizes
    (profile_path,) = (out / "profiles").glob("*/budget-60ms.json")
    profile = load_profile(profile_path)
    source = profile.doc["training"]["source"]
    assert source["sha256"] == sha and source["file"] == "best.pt" and source["names"] == base["names"]

    client = mlflow.MlflowClient(uri)
    (exp,) = [e for e in client.search_experiments() if e.name.endswith("-yolov5-best")]
    runs = client.search_runs([exp.experiment_id])
    roles = {r.data.tags.get("search_role") for r in runs if r.data.tags.get("source_sha256") == sha}
    assert {"parent", "trial", "profile"} <= roles

    # The same command again resumes: nothing is imported or trained twice.
    stamps = {p: p.stat().st_mtime_ns for p in [imported, *out.glob("trials/*/train/weights/last.pt")]}
    assert search_main(args) == 0
    assert "all 2 trials already ended" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_a_dataset_with_other_classes_is_refused_before_training(yolov5_best, tiny_dataset, tiny_gates_pipeline,
                                                                 tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("DH_TUNE_HOME", str(tmp_path / "home"))
    data = yaml.safe_load(Path(tiny_dataset).read_text())
    names = dict(enumerate(data["names"].values() if isinstance(data["names"], dict) else data["names"]))
    for label, changed in (("count", {**names, len(names): "extra"}), ("name", {**names, 0: "not-a-sign"})):
        other = Path(tiny_dataset).with_name(f"other-{label}.yaml")
        other.write_text(yaml.safe_dump({**data, "names": changed}))
        out = tmp_path / f"search-{label}"
        assert search_main(["--from-yolov5", str(yolov5_best), "--data", str(other), "--budget-ms", "60",
                            "--pipeline", str(tiny_gates_pipeline), "--out", str(out), "--no-mlflow"]) == 2
        err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
        assert len(err) == 1 and str(other) in err[0] and ("classes" in err[0] or "not-a-sign" in err[0]), err
        assert not (out / "trials").exists() and not (out / "devices").exists()


def test_search_data_names_a_missing_dataset_in_one_line(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("DH_TUNE_HOME", str(tmp_path / "home"))
    missing = tmp_path / "nowhere" / "data.yaml"
    assert search_main(["--data", str(missing), "--budget-ms", "20", "--out", str(tmp_path / "s"),
                        "--no-mlflow"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and str(missing) in err[0], err
