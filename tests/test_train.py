"""Training: schedule, checkpoints, resume, Ray Train with 2 workers, failure recovery, MLflow."""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from train_hooks import InjectedFailure

from dh_tune.data.synth import generate
from dh_tune.model.checkpoint import checkpoint_eps, checkpoint_imgsz, checkpoint_val_split, load_checkpoint
from dh_tune.pipeline import Pipeline, PipelineError, load_pipeline
from dh_tune.train.run import TrainOptions, run_training
from dh_tune.train.schedule import cosine_factor


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("synth")
    generate(root / "signs", train=16, val=8, imgsz=128, seed=3, workers=1)
    return str(root / "signs" / "data.yaml")


@pytest.fixture
def tiny_pipeline(tiny_pipeline_doc) -> Callable[..., Pipeline]:
    """The shared tiny pipeline at half width and one thread per worker, with augmentation (resume must replay it)."""

    def build(data: str, **train) -> Pipeline:
        settings = {"epochs": 2, "warmup_epochs": 0.5, "threads": 1, "augment": {}, **train}
        return Pipeline.model_validate(tiny_pipeline_doc(data, width=0.125, **settings))

    return build


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


def test_cosine_schedule_runs_from_one_to_lrf() -> None:
    assert cosine_factor(0, 10, 0.1) == pytest.approx(1.0)
    assert cosine_factor(10, 10, 0.1) == pytest.approx(0.1)
    assert cosine_factor(3, 10, 0.1) > cosine_factor(4, 10, 0.1)


def test_epoch_hooks_are_named_module_colon_function() -> None:
    import train_hooks

    from dh_tune.train.epoch_hooks import epoch_hooks

    assert epoch_hooks("") == []
    assert epoch_hooks(" train_hooks:write_rank_checksum, ") == [train_hooks.write_rank_checksum]
    with pytest.raises(ValueError, match="not module:function"):
        epoch_hooks("train_hooks")


def test_pipeline_errors_name_the_bad_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epochz: 3\n")
    with pytest.raises(PipelineError, match=r"bad.yaml: train.epochz: unknown key"):
        load_pipeline(bad)
    bad.write_text("data:\n  imgsz: 100\n")
    with pytest.raises(PipelineError, match=r"data.imgsz: .*multiple of 32"):
        load_pipeline(bad)
    for name in ("quickstart.yaml", "tt100k-yolov5s.yaml"):
        assert load_pipeline(Path(__file__).resolve().parents[1] / "pipelines" / name).name


@pytest.mark.parametrize("speed", [{}, {"bf16": True, "channels_last": True}], ids=["fp32", "bf16-nhwc"])
def test_resume_continues_a_stopped_run_to_the_same_result(tiny_data: str, tiny_pipeline, epoch_hooks,
                                                            tmp_path: Path, speed: dict) -> None:
    """Stopped after an epoch and resumed, a run ends with the uninterrupted run's weights: in fp32, and with the
    throughput settings (bf16 autocast, NHWC, the fused optimiser step)."""
    p = tiny_pipeline(tiny_data, **speed)
    straight = run_training(p, TrainOptions(run_dir=tmp_path / "straight", use_ray=False, track=False))
    epoch_hooks("crash_once_after_first_epoch")
    with pytest.raises(InjectedFailure):
        run_training(p, TrainOptions(run_dir=tmp_path / "stopped", use_ray=False, track=False))
    assert load_checkpoint(tmp_path / "stopped" / "weights" / "last.pt")["epoch"] == 0
    epoch_hooks()
    resumed = run_training(p, TrainOptions(resume=tmp_path / "stopped", use_ray=False, track=False))
    ckpt = load_checkpoint(resumed.last)
    assert ckpt["epoch"] == 1 and len(ckpt["history"]) == 2
    assert (checkpoint_imgsz(ckpt), checkpoint_eps(ckpt), checkpoint_val_split(ckpt)) == (
        p.data.imgsz, p.train.loss.eps, p.data.val_split)
    a, b = _weights(straight.last), _weights(resumed.last)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)


@pytest.mark.slow
def test_ray_train_two_workers_stay_in_sync_and_log_to_mlflow(tiny_data: str, tiny_pipeline, epoch_hooks,
                                                               tmp_path: Path) -> None:
    epoch_hooks("write_rank_checksum")
    p = tiny_pipeline(tiny_data, epochs=1).with_overrides(ray={"workers": 2, "cpus_per_worker": 1})
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    outcome = run_training(p, TrainOptions(run_dir=tmp_path / "ddp", tracking_uri=uri))
    ranks = [json.loads((tmp_path / "ddp" / "ranks" / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["sha256"] == ranks[1]["sha256"] and ranks[0]["epoch"] == 1
    ckpt = torch.load(outcome.last, map_location="cpu", weights_only=True)
    assert ckpt["format"] == "dh-tune-checkpoint" and ckpt["epoch"] == 0
    from mlflow.tracking import MlflowClient

    run = MlflowClient(uri).get_run(outcome.mlflow_run_id)
    assert {"ap50", "gate1_acc", "box", "lr"} <= set(run.data.metrics)
    assert run.data.params["train.epochs"] == "1" and run.data.tags["workers"] == "2"
    assert run.info.status == "FINISHED"


@pytest.mark.slow
def test_injected_worker_failure_recovers_from_checkpoint(tiny_data: str, tiny_pipeline, epoch_hooks,
                                                           tmp_path: Path) -> None:
    epoch_hooks("crash_once_after_first_epoch")
    p = tiny_pipeline(tiny_data, epochs=2).with_overrides(ray={"max_failures": 1})
    outcome = run_training(p, TrainOptions(run_dir=tmp_path / "crash", track=False))
    assert (tmp_path / "crash" / ".failure-injected-0").exists()
    ckpt = load_checkpoint(outcome.last)
    assert ckpt["epoch"] == 1
    assert [h["epoch"] for h in ckpt["history"]] == [1, 2]  # epoch 1 was not trained twice


class _CountingScorer:
    """Scores every second epoch: the number of parameters of the model it is handed, and the epoch."""

    def __init__(self) -> None:
        self.seen: list[int] = []

    def due(self, epoch: int, epochs: int) -> bool:
        return epoch % 2 == 1 or epoch + 1 == epochs

    def __call__(self, model, device) -> dict:
        self.seen.append(sum(p.numel() for p in model.parameters()))
        return {"front_hv": float(len(self.seen))}


def test_an_epoch_scorer_adds_its_numbers_to_the_epochs_it_names(tiny_data: str, tiny_pipeline, tmp_path: Path) -> None:
    p = tiny_pipeline(tiny_data, epochs=3, lr_scale=0.0)
    scorer = _CountingScorer()
    outcome = run_training(p, TrainOptions(run_dir=tmp_path / "run", use_ray=False, track=False, epoch_scorer=scorer))
    history = load_checkpoint(outcome.last)["history"]
    assert [h.get("front_hv") for h in history] == [None, 1.0, 2.0]  # epochs 2 and 3 (the last)
    assert len(set(scorer.seen)) == 1 and scorer.seen[0] > 0
    # lr_scale 0 freezes the weights: the learning rate of every step is 0.
    assert all(h["lr"] == 0.0 for h in history)
