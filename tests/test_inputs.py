"""Bad input gives one line naming the file or flag and the reason: non-finite numbers, empty files, secrets."""
from __future__ import annotations

import copy
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from dh_tune.detect import main as detect_main
from dh_tune.export.dhnet_runtime import MANIFEST, DeploymentError, read_manifest
from dh_tune.messages import finite_float, first_line, loads_finite, redact_uri
from dh_tune.model.checkpoint import CheckpointError, load_checkpoint
from dh_tune.pipeline import PipelineError, load_pipeline
from dh_tune.search.__main__ import parse_args as search_args
from dh_tune.threshold_profiles import ProfileError, load_profile

ROOT = Path(__file__).resolve().parents[1]
NON_FINITE = ["NaN", "Infinity", "-Infinity", "1e999"]


def test_first_line_of_an_empty_message_is_the_type_name() -> None:
    assert first_line(EOFError()) == "EOFError"
    assert first_line(ValueError("bad\nmore")) == "bad"


@pytest.mark.parametrize("token", NON_FINITE)
def test_json_readers_refuse_non_finite_numbers(token: str, tmp_path) -> None:
    text = f'{{"thresholds": [{token}, 0.5], "budget_ms": 20}}'
    with pytest.raises(ValueError, match="not a finite number"):
        loads_finite(text)
    assert loads_finite('{"a": [0.5, 1e300, -2]}') == {"a": [0.5, 1e300, -2]}
    profile = tmp_path / "p.json"
    profile.write_text(text)
    with pytest.raises(ProfileError, match=rf"^{profile}: .*not a finite number"):
        load_profile(profile)
    (tmp_path / MANIFEST).write_text(f'{{"imgsz": 160, "thresholds": [{token}, 0.5]}}')
    with pytest.raises(DeploymentError, match="not a finite number"):
        read_manifest(tmp_path)


def test_pipelines_refuse_non_finite_numbers(tmp_path) -> None:
    doc = yaml.safe_load((ROOT / "pipelines" / "quickstart.yaml").read_text())
    for section, key in (("train", "lr0"), ("search", "min_dynamic_gain")):
        for value in (math.nan, math.inf):
            bad = copy.deepcopy(doc)
            bad.setdefault(section, {})[key] = value
            path = tmp_path / "bad.yaml"
            path.write_text(yaml.safe_dump(bad))
            with pytest.raises(PipelineError, match=rf"{path}: .*{section}.{key}"):
                load_pipeline(path)


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "1e999", "fast"])
def test_number_flags_refuse_what_is_not_a_finite_number(text: str, capsys) -> None:
    with pytest.raises(Exception, match="not a"):
        finite_float(text)
    with pytest.raises(SystemExit) as stop:
        search_args([f"--budget-ms={text}"])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("usage:") is False and "--budget-ms" in err[-1] and "not a" in err[-1]
    assert finite_float("20") == 20.0


def test_detect_refuses_bad_flags_and_an_empty_checkpoint_in_one_line(trained_tiny, tmp_path, capsys) -> None:
    image = tmp_path / "a.jpg"
    cv2.imwrite(str(image), np.full((64, 64, 3), 127, np.uint8))
    out = str(tmp_path / "out")
    with pytest.raises(SystemExit) as stop:
        detect_main([str(image), "--checkpoint", str(trained_tiny), "--thresholds", "nan", "5", "--out", out])
    assert stop.value.code == 2 and "--thresholds" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        detect_main([str(image), "--checkpoint", str(trained_tiny), "--imgsz", "100", "--out", out])
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2
    assert err[-1].endswith("error: --imgsz 100: must be a positive multiple of 32 (the largest stride)")
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match=rf"^{empty}: empty file \(0 bytes\), not a dh-tune checkpoint$"):
        load_checkpoint(empty)
    assert detect_main([str(image), "--checkpoint", str(empty), "--out", out]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {empty}: empty file (0 bytes), not a dh-tune checkpoint"]
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(trained_tiny.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=rf"^{truncated}: not a readable dh-tune checkpoint \(\w+"):
        load_checkpoint(truncated)


def test_credentials_in_tracking_uris_are_never_printed(tmp_path, capsys, caplog) -> None:
    from dh_tune.tracking import start_run

    assert redact_uri("http://user:s3cret@host:5000/x") == "http://***@host:5000/x"
    assert redact_uri("https://token@host/") == "https://***@host/"
    assert redact_uri("sqlite:////tmp/mlflow.db") == "sqlite:////tmp/mlflow.db"
    assert start_run("http://alice:s3cret@127.0.0.1:9/", "exp", "run") is None  # nothing listens on port 9
    err = caplog.text + capsys.readouterr().err
    assert "cannot reach MLflow at http://***@127.0.0.1:9/" in err and "s3cret" not in err and "alice" not in err


def _raises(exc: BaseException):
    def body() -> int:
        raise exc

    return body


def test_commands_turn_input_errors_into_one_line_and_keep_the_traceback_of_anything_else(capsys) -> None:
    from dh_tune.messages import InputError, run_command

    class Refused(RuntimeError):
        pass

    class Failed(RuntimeError):
        pass

    assert run_command(lambda: 3) == 3
    assert run_command(_raises(InputError("x.yaml: train.epochz: unknown key"))) == 2
    assert capsys.readouterr().err == "error: x.yaml: train.epochz: unknown key\n"
    assert run_command(_raises(Refused("4 CPUs needed")), refused=(Refused,)) == 2
    assert run_command(_raises(Failed("every trial failed")), failed=(Failed,)) == 1
    assert capsys.readouterr().err.splitlines() == ["error: 4 CPUs needed", "error: every trial failed"]
    explain = lambda exc: "Ray lost a node" if isinstance(exc, ConnectionError) else None  # noqa: E731
    assert run_command(_raises(ConnectionError("gone")), explain=explain) == 1
    assert capsys.readouterr().err == "error: Ray lost a node\n"
    for bug in (_raises(KeyError("a bug")), _raises(Refused("not refused here"))):
        with pytest.raises((KeyError, Refused)):
            run_command(bug, explain=explain)


def test_library_messages_reach_stderr_while_a_command_runs(capsys) -> None:
    import logging

    from dh_tune.messages import run_command

    log = logging.getLogger("dh_tune.search.driver")

    def body() -> int:
        log.info("training the base model")
        log.warning("MLflow logging failed")
        return 0

    assert run_command(body) == 0
    log.warning("after the command: not on stderr, the command's handler is gone")
    assert capsys.readouterr().err.splitlines() == ["[search] training the base model", "warning: MLflow logging failed"]


def test_every_input_size_is_checked_by_one_rule_with_the_flag_named(capsys) -> None:
    from dh_tune.input_size import check_imgsz, imgsz_problem
    from dh_tune.messages import InputError
    from dh_tune.model.__main__ import main as model_main

    assert check_imgsz(64) == 64 and imgsz_problem(416) is None
    for bad in (0, -32, 100):
        assert imgsz_problem(bad) == "must be a positive multiple of 32 (the largest stride)"
    with pytest.raises(InputError, match=r"^--imgsz 100: must be a positive multiple of 32"):
        check_imgsz(100, "--imgsz", InputError)
    assert model_main(["--imgsz", "100"]) == 2
    assert capsys.readouterr().err == "error: --imgsz 100: must be a positive multiple of 32 (the largest stride)\n"


def test_log_lines_carry_their_level_and_the_search_its_tag() -> None:
    import logging

    from dh_tune.messages import LineFormatter

    def line(name: str, level: int, msg: str) -> str:
        return LineFormatter("%(message)s").format(logging.LogRecord(name, level, __file__, 1, msg, None, None))

    assert line("dh_tune.search.driver", logging.INFO, "training") == "[search] training"
    assert line("dh_tune.search.summary", logging.WARNING, "MLflow failed") == "warning: MLflow failed"
    assert line("dh_tune.latency.table_sources", logging.INFO, "measuring") == "measuring"
    assert line("dh_tune.evaluate", logging.ERROR, "gone") == "error: gone"
    assert line("dh_tune.searcher", logging.INFO, "x") == "x" and line("dh_tune", logging.INFO, "y") == "y"
