"""One search per folder at a time; inputs checked before anything starts; a lost Ray node is one line.

The kill -9 and damaged-file scenarios run end to end in test_search_e2e.py."""
from __future__ import annotations

import json
import os

import pytest

from dh_tune.search.__main__ import main as search_main
from dh_tune.search.lock import LOCK_FILE, FolderLocked, search_lock


def test_a_second_search_into_a_locked_folder_stops_at_once(tmp_path, capsys) -> None:
    out = tmp_path / "search"
    with search_lock(out):
        with pytest.raises(FolderLocked, match=f"pid {os.getpid()}"):
            with search_lock(out):
                pass
        assert search_main(["--budget-ms", "20", "--out", str(out), "--no-mlflow"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "another search is running" in err[0] and str(out) in err[0]
    # A lock left by a process that died (the file stays, the kernel's lock does not) is taken over.
    (out / LOCK_FILE).write_text(json.dumps({"pid": 999999, "host": "gone", "started": "then"}))
    with search_lock(out) as path:
        assert json.loads(path.read_text())["pid"] == os.getpid()


def test_a_bad_checkpoint_is_refused_before_any_mlflow_run_starts(tmp_path, capsys) -> None:
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert search_main(["--budget-ms", "20", "--checkpoint", str(empty), "--out", str(tmp_path / "s"),
                        "--tracking-uri", uri]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(empty) in err[0]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    assert not client.search_runs([e.experiment_id for e in client.search_experiments()])


def test_an_empty_state_file_is_named_and_started_afresh(tmp_path, caplog) -> None:
    from dh_tune.search.driver import _load_state

    (tmp_path / "search.json").write_text("")
    assert _load_state(tmp_path) == {}
    assert f"{tmp_path / 'search.json'}: unreadable" in caplog.text


def test_a_lost_ray_node_is_one_line_saying_how_to_resume_and_a_bug_keeps_its_traceback(tmp_path, monkeypatch,
                                                                                        capsys) -> None:
    import ray.exceptions

    from dh_tune.search import driver

    def node_dies(req):
        try:
            raise ray.exceptions.NodeDiedError("Node 1a2b died: missed heartbeats\nraylet.out has more")
        except ray.exceptions.NodeDiedError as exc:
            raise RuntimeError("Tune trial errored") from exc

    monkeypatch.setattr(driver, "run_search", node_dies)
    out = tmp_path / "s"
    assert search_main(["--budget-ms", "20", "--out", str(out), "--no-mlflow"]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "NodeDiedError: Node 1a2b died" in line and str(out) in line and "re-run the same command" in line

    def bug(req):
        raise ValueError("an internal mistake, not an input")

    monkeypatch.setattr(driver, "run_search", bug)
    with pytest.raises(ValueError, match="internal mistake"):  # not turned into 'error: ...', exit 2
        search_main(["--budget-ms", "20", "--out", str(out), "--no-mlflow"])


def test_a_trial_the_cluster_cannot_hold_is_refused_before_any_training_or_mlflow_run(
        tiny_dataset, tiny_pipeline_doc, tmp_path, monkeypatch, capsys) -> None:
    import yaml

    monkeypatch.setenv("DH_TUNE_HOME", str(tmp_path / "home"))
    doc = tiny_pipeline_doc(tiny_dataset, imgsz=64)
    doc["ray"] = {"workers": 8, "cpus_per_worker": 1}  # 8 CPUs a trial; this machine's Ray has far fewer
    doc["search"]["deploy_imgsz"] = [64]
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(doc))
    out, uri = tmp_path / "search", f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert search_main(["--budget-ms", "20", "--pipeline", str(tmp_path / "p.yaml"), "--out", str(out),
                        "--tracking-uri", uri, "--runtime", "torch"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and "one search trial needs 8 worker(s) x (1 CPU)" in errors[0]
    assert not (out / "base").exists() and not (out / "trials").exists()
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    assert not client.search_runs([e.experiment_id for e in client.search_experiments()])
