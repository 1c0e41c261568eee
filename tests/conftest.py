"""Shared fixtures: tiny images and datasets written into pytest's tmp_path."""
from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import cv2
import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def bench_script(monkeypatch) -> Callable[[str], ModuleType]:
    """Imports a script of benchmarks/ by module name (e.g. "run_all").

    The folder is on sys.path only while the test runs: the scripts import their siblings by name.
    """
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return importlib.import_module


def _write_image(path: Path, width: int = 64, height: int = 48, value: int = 90) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.full((height, width, 3), value, np.uint8)
    img[height // 4: height // 2, width // 4: width // 2] = (30, 60, 200)
    assert cv2.imwrite(str(path), img)
    return path


@pytest.fixture
def data_make_image() -> Callable[..., Path]:
    """Function writing a small BGR test image (JPEG or PNG by suffix) and returning its path."""
    return _write_image


@pytest.fixture
def data_yolo_root(tmp_path: Path) -> Path:
    """A tiny YOLO dataset: 3 train images (one without a label file), 2 val images, data.yaml."""
    root = tmp_path / "yolo"
    for split, count in (("train", 3), ("val", 2)):
        for i in range(count):
            _write_image(root / "images" / split / f"{i}.jpg", 64, 48)
            if not (split == "train" and i == 2):
                label = root / "labels" / split / f"{i}.txt"
                label.parent.mkdir(parents=True, exist_ok=True)
                label.write_text("0 0.5 0.5 0.25 0.5\n1 0.25 0.25 0.125 0.125\n")
    (root / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/val\nnames: {0: circle, 1: square}\n")
    return root


# --- trained tiny models, shared by the evaluation and search tests --------------------------------
TINY_DEPTH = 0.33
NO_AUGMENT = {"hsv_h": 0, "hsv_s": 0, "hsv_v": 0, "fliplr": 0, "scale": 0, "translate": 0}


def _tiny_pipeline_doc(data_yaml: str, imgsz: int = 128, epochs: int = 30, width: float = 0.25, **train) -> dict:
    """A pipeline that trains a tiny DH-Net on a tiny dataset in seconds (no augmentation unless `augment` is given).

    `width` scales the channels (0.125 for tests that only need training to run); `train` overrides train keys.
    """
    return {
        "name": "tiny",
        "data": {"dataset": data_yaml, "imgsz": imgsz, "cache_images": True},
        "model": {"scale": [TINY_DEPTH, width]},
        "train": {"epochs": epochs, "batch_size": 8, "optimizer": "adamw", "lr0": 0.01, "momentum": 0.9,
                  "warmup_epochs": 3, "warmup_bias_lr": 0.0, "threads": 2, "augment": NO_AUGMENT,
                  # NCHW and fp32 on every CPU: the shared tiny models' thresholds (int8 within 85% of fp32 AP on 8
                  # images) were set on them; NHWC and bf16 training are checked step by step in
                  # test_train_feeding.py and test_train_precision.py
                  "channels_last": False, "bf16": False, **train},
        "ray": {"workers": 1, "cpus_per_worker": 1},
        "search": {"trials": 2, "trial_epochs": 1, "deploy_imgsz": [96, 128], "threshold_trials": 40,
                   "grid_steps": 11, "bootstrap_resamples": 100},
    }


@pytest.fixture(scope="session")
def tiny_pipeline_doc() -> Callable[..., dict]:
    """Factory of the tiny pipeline document (parameters: see _tiny_pipeline_doc), one definition for every test."""
    return _tiny_pipeline_doc


def _end_processes(procs: list, timeout: float = 15.0) -> list:
    """Terminate the processes, kill what is left after `timeout` s; the ones still alive after that."""
    import psutil

    for p in procs:
        try:
            p.terminate()
        except psutil.Error:  # ended meanwhile
            pass
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass
    return psutil.wait_procs(alive, timeout=timeout)[1]


@pytest.fixture
def end_processes() -> Callable[..., list]:
    """Ends the given psutil processes (terminate, then kill) and returns those still running: tests stop
    exactly the processes they started, never every Ray process of the machine."""
    return _end_processes


@pytest.fixture(scope="session")
def untrained_checkpoint(tmp_path_factory) -> Path:
    """An untrained tiny DH-Net (2 classes, 64 px) saved as a checkpoint, for tests that need no accuracy."""
    from dh_tune.model import DHNet
    from dh_tune.model.checkpoint import model_args, save_checkpoint

    model = DHNet((0.33, 0.25), nc=2)
    return save_checkpoint(tmp_path_factory.mktemp("untrained") / "model.pt",
                           {"model": model.state_dict(), "model_args": model_args(model), "names": ["a", "b"],
                            "epoch": 0, "config": {"data": {"imgsz": 64}}})


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> str:
    """8 synthetic sign images at 128 px whose val split is a copy of the train split (data YAML)."""
    import shutil

    from dh_tune.data.synth import generate

    root = tmp_path_factory.mktemp("tiny-signs") / "signs"
    generate(root, train=8, val=1, imgsz=128, seed=5, workers=1)
    for kind in ("images", "labels"):
        shutil.rmtree(root / kind / "val")
        shutil.copytree(root / kind / "train", root / kind / "val")
    return str(root / "data.yaml")


@pytest.fixture(scope="session")
def trained_tiny(tiny_dataset, tiny_pipeline_doc, tmp_path_factory) -> Path:
    """A tiny DH-Net fitted to the tiny dataset in-process (about a minute): its best checkpoint."""
    from dh_tune.pipeline import Pipeline
    from dh_tune.train.run import TrainOptions, run_training

    run = tmp_path_factory.mktemp("tiny-run")
    outcome = run_training(Pipeline.model_validate(tiny_pipeline_doc(tiny_dataset, epochs=200)),
                           TrainOptions(run_dir=run / "r", use_ray=False, track=False))
    return outcome.best


@pytest.fixture(scope="session")
def exit_tables(trained_tiny, tiny_dataset, tmp_path_factory):
    """Exit tables of the trained tiny model on its val split at 96 and 128 px."""
    from dh_tune.data import load_dataset
    from dh_tune.evaluate.exit_cache import cached_exit_table
    from dh_tune.model.checkpoint import file_sha256, load_model

    model, _ = load_model(trained_tiny)
    val = load_dataset(tiny_dataset).splits["val"]
    cache = tmp_path_factory.mktemp("exit-cache")
    sha = file_sha256(trained_tiny)
    return {s: cached_exit_table(model, sha, val, s, eps=4.0, cache_dir=cache, progress=False) for s in (96, 128)}


def _stop_ray() -> None:
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


@pytest.fixture
def epoch_hooks(monkeypatch) -> Iterator[Callable[..., None]]:
    """Names hooks of tests/train_hooks.py for the training loops that start next (none: no hooks), Ray workers included.

    Ray workers see the environment Ray started with: a running Ray is stopped, here and after the test.
    """

    def use(*names: str) -> None:
        monkeypatch.setenv("DH_TUNE_EPOCH_HOOKS", ",".join(f"train_hooks:{name}" for name in names))
        monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, (str(Path(__file__).parent),
                                                                        os.environ.get("PYTHONPATH")))))
        _stop_ray()

    yield use
    _stop_ray()
