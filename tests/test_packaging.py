"""Packaging: the default pipeline and search space load from any folder, in a checkout and in a wheel install,
and pyproject.toml declares every package and the same dependencies as requirements.txt."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dh_tune.pipeline import Pipeline, load_pipeline
from dh_tune.resources import default_pipeline, find_file, packaged_file
from dh_tune.search.space import SearchSpaceError, load_space
from dh_tune.train.__main__ import build_pipeline, parse_args

ROOT = Path(__file__).resolve().parents[1]
SPACE = "gate_lambda: {type: float, low: 0.01, high: 0.1}\n"


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=~!; ]", requirement.strip(), maxsplit=1)[0].lower()


def test_default_pipeline_and_search_space_load_from_any_folder(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = default_pipeline()
    assert path is not None and path.read_bytes() == (ROOT / "pipelines" / "quickstart.yaml").read_bytes()
    pipeline = load_pipeline(path)
    assert pipeline.name == "quickstart"
    space = Path(pipeline.search.search_space)  # the quickstart's trials train gates on the frozen base
    assert space.read_bytes() == (ROOT / "search_spaces" / "gates_only.yaml").read_bytes()
    assert {d.name for d in load_space(pipeline.search.search_space)} == {"lambda_pos_1", "lambda_pos_2", "eps"}
    default = Path(Pipeline().search.search_space)  # a pipeline that names no space searches the whole gate loss
    assert default.read_bytes() == (ROOT / "search_spaces" / "gate_loss.yaml").read_bytes()
    names = {d.name for d in load_space(str(default))}
    assert names == {"gate_lambda", "lambda_pos_1", "lambda_pos_2", "eps", "gate_trunk_grad"}
    assert load_space(load_pipeline(None).search.search_space) == load_space(str(default))
    # The commands' default, and a packaged pipeline named the way the README writes it.
    assert build_pipeline(parse_args([])).name == "quickstart"
    assert load_pipeline(find_file("pipelines/tt100k-yolov5s.yaml", "pipelines")).data.format == "tt100k"
    assert list(tmp_path.iterdir()) == []


def test_a_search_space_is_found_as_given_then_next_to_the_pipeline_then_by_name(tmp_path: Path,
                                                                                 monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    configs = tmp_path / "configs"
    (configs / "spaces").mkdir(parents=True)
    beside = configs / "spaces" / "mine.yaml"
    beside.write_text(SPACE)
    pipeline_file = configs / "p.yaml"
    pipeline_file.write_text("search: {search_space: spaces/mine.yaml}\n")
    assert Path(load_pipeline(pipeline_file).search.search_space) == beside.resolve()
    (tmp_path / "spaces").mkdir()
    (tmp_path / "spaces" / "mine.yaml").write_text(SPACE)
    assert Path(load_pipeline(pipeline_file).search.search_space) == (tmp_path / "spaces" / "mine.yaml").resolve()
    pipeline_file.write_text("search: {search_space: search_spaces/gate_loss.yaml}\n")
    assert Path(load_pipeline(pipeline_file).search.search_space) == packaged_file("search_spaces", "gate_loss")
    # Anything else that does not exist is kept as written, so the error names it.
    pipeline_file.write_text("search: {search_space: nowhere/gate_loss.yaml}\n")
    missing = load_pipeline(pipeline_file).search.search_space
    assert missing == "nowhere/gate_loss.yaml"
    with pytest.raises(SearchSpaceError, match="nowhere/gate_loss.yaml"):
        load_space(missing)


def test_pyproject_lists_every_package_and_keeps_data_folders_free_of_modules() -> None:
    setuptools = _pyproject()["tool"]["setuptools"]
    packages = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "dh_tune").rglob("__init__.py")}
    assert set(setuptools["packages"]) == packages | {"dh_tune.pipelines", "dh_tune.search_spaces"}
    assert setuptools["package-dir"] == {"dh_tune.pipelines": "pipelines", "dh_tune.search_spaces": "search_spaces"}
    assert (ROOT / "dh_tune" / "py.typed").is_file() and "py.typed" in setuptools["package-data"]["dh_tune"]
    for folder in ("pipelines", "search_spaces"):
        assert list((ROOT / folder).glob("*.yaml")) and not list((ROOT / folder).glob("*.py"))


def test_dependencies_match_the_requirements_file() -> None:
    project = _pyproject()["project"]
    lines = [line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    pinned = {_name(line) for line in lines if line and not line.startswith("-")}
    test_tools = {_name(r) for r in project["optional-dependencies"]["test"]}
    lint_tools = set(project["optional-dependencies"]["lint"])
    assert {_name(r) for r in project["dependencies"]} | test_tools | {_name(r) for r in lint_tools} == pinned
    assert test_tools == {"pytest", "pytest-timeout"} and "torch==2.13.0" in project["dependencies"]
    assert lint_tools <= set(lines), "the lint tools are pinned to the same versions in both files"
    assert "-e ." in lines


def test_a_wheel_install_finds_its_pipelines_and_search_spaces_from_any_folder(tmp_path: Path) -> None:
    source = tmp_path / "src"  # a copy, so the build leaves nothing in the checkout
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    for folder in ("dh_tune", "pipelines", "search_spaces"):
        shutil.copytree(ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    target = tmp_path / "site"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                          "--target", str(target), str(source)], capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, pip.stderr[-2000:]
    assert sorted(p.name for p in (target / "dh_tune" / "pipelines").iterdir()) == sorted(
        p.name for p in (ROOT / "pipelines").glob("*.yaml"))
    script = ("import sys, dh_tune\n"
              "from dh_tune.pipeline import load_pipeline\n"
              "from dh_tune.resources import default_pipeline\n"
              "from dh_tune.search.space import load_space\n"
              "p = load_pipeline(default_pipeline())\n"
              "print(dh_tune.__file__, default_pipeline(), p.search.search_space, len(load_space(p.search.search_space)))\n")
    run = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(target)!r})\n" + script],
                         capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    module, pipeline, space, dims = run.stdout.split()
    installed = target / "dh_tune"
    assert Path(module).parent == installed and int(dims) == 3
    assert Path(pipeline) == installed / "pipelines" / "quickstart.yaml"
    assert Path(space) == installed / "search_spaces" / "gates_only.yaml"
