"""`dh-tune COMMAND`: every command reaches the same main as its `python -m` form, --help starts without torch or
Ray, a wrong command exits 2, and the console script is installed."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dh_tune.cli import COMMANDS, main

HEAVY = ("torch", "ray", "cv2", "mlflow", "optuna", "onnxruntime", "openvino")


@pytest.fixture(autouse=True)
def _fixed_help_width(monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "100")


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_prints_the_help_of_its_module(command: str, capsys) -> None:
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    module = COMMANDS[command][0].removesuffix(".__main__")
    assert capsys.readouterr().out.startswith(f"usage: python -m {module} ")


def test_top_level_help_lists_every_command_on_one_line(capsys) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    for name, (_, summary) in COMMANDS.items():
        assert sum(line.split() == [name, *summary.split()] for line in lines) == 1, name


@pytest.mark.parametrize("argv", [[], ["bogus"], ["--pipeline", "x.yaml", "search"]])
def test_a_missing_or_unknown_command_exits_2(argv: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 2 and "usage: dh-tune" in capsys.readouterr().err


def test_arguments_and_exit_status_pass_through(capsys) -> None:
    assert main(["model", "--scale", "0.33,0.25", "--nc", "3", "--imgsz", "64", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["imgsz"] == 64 and doc["nc"] == 3
    try:
        status = main(["model", "--imgsz", "100"])
    except SystemExit as stop:  # argparse's own refusals exit instead of returning
        status = stop.code
    assert status == 2 and "--imgsz 100" in capsys.readouterr().err


def test_help_starts_without_torch_or_ray() -> None:
    probe = ("import sys\nfrom dh_tune.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
             f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[-1] == "[]"


def test_console_script_matches_python_m(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("dh-tune")
    assert script.is_file(), "reinstall the project: pip install -e ."
    env = {**os.environ, "COLUMNS": "100"}
    listing = subprocess.run([str(script), "--help"], capture_output=True, text=True, cwd=tmp_path, env=env,
                             timeout=120)
    assert listing.returncode == 0 and all(name in listing.stdout for name in COMMANDS)
    via_script, via_module = (subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
                              for argv in ([str(script), "search", "--help"],
                                           [sys.executable, "-m", "dh_tune.search", "--help"]))
    assert via_script.returncode == via_module.returncode == 0
    # The same parser: only the name in the usage line differs (and the indentation that follows it).
    assert via_script.stdout.startswith("usage: dh-tune search ")
    assert via_module.stdout.startswith("usage: python -m dh_tune.search ")
    assert via_script.stdout.split() == ["usage:", "dh-tune", "search", *via_module.stdout.split()[4:]]
    assert "--budget-ms" in via_script.stdout
    wrong = subprocess.run([str(script), "bogus"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert wrong.returncode == 2


def test_a_former_command_name_still_runs_its_command(capsys) -> None:
    from dh_tune.commands import ALIASES, COMMANDS

    assert set(ALIASES.values()) <= set(COMMANDS) and not set(ALIASES) & set(COMMANDS)
    with pytest.raises(SystemExit) as done:
        main(["profile-device", "--help"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("usage: python -m dh_tune.latency ")
    run = subprocess.run([sys.executable, "-m", "dh_tune.profile_device", "--help"], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0 and "--imgsz" in run.stdout
