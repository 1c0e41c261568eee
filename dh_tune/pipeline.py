"""Pipeline files: one YAML describes the dataset, the model, training, Ray and the search.

Validated on load with pydantic; any problem is one line naming the file and the bad key.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .input_size import imgsz_problem
from .messages import InputError
from .resources import default_search_space, find_file
from .yamlfile import read_yaml_mapping


class PipelineError(InputError):
    """A pipeline file that cannot be used: one line with the file, the key and the reason."""


class _Section(BaseModel):
    # NaN and infinities are refused wherever a pipeline holds a number.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class SynthConfig(_Section):
    """Size of the embedded synthetic dataset, generated once into DH_TUNE_HOME."""

    train: int = Field(2000, ge=1)
    val: int = Field(500, ge=1)
    seed: int = 0


class DataConfig(_Section):
    """Where the images come from and how they are fed."""

    dataset: str | None = None  # None: the embedded synthetic signs
    format: Literal["yolo", "coco", "tt100k"] | None = None
    imgsz: int = Field(416, ge=32)
    synth: SynthConfig = SynthConfig()
    train_split: str = "train"
    val_split: str = "val"
    # Held-out images that report on the chosen profiles; a dataset without this split has its val split divided.
    test_split: str | None = "test"
    cache_images: bool = True
    # Loader processes per training worker; "auto" sizes them from the worker's CPUs (train.data_setup).
    loader_workers: Annotated[int, Field(ge=0)] | Literal["auto"] = "auto"
    min_images_per_class: int | None = None  # TT100K class filter (paper: 15)
    min_instances: int | None = None  # TT100K class filter by instances (common: 100)
    val_limit: int | None = Field(None, ge=1)

    @field_validator("imgsz")
    @classmethod
    def _input_size(cls, v: int) -> int:
        problem = imgsz_problem(v)
        if problem is not None:
            raise ValueError(f"{problem}, got {v}")
        return v


class ModelConfig(_Section):
    """YOLOv5 scale: a name (n, s, m, l, x) or [depth, width]."""

    scale: str | tuple[float, float] = "n"
    init_from: str | None = None  # a YOLOv5-named state dict (.pt, weights_only)


class LossConfig(_Section):
    """Detection-loss gains and the gate-loss hyperparameters (paper Eq. 14-15, Eq. 3-7).

    Detection gains are the values before YOLOv5's rescaling by classes, image size and levels (DHLoss).
    """

    box: float = Field(0.05, ge=0.0)
    cls: float = Field(0.5, ge=0.0)
    obj: float = Field(1.0, ge=0.0)
    anchor_t: float = Field(4.0, gt=1.0)
    gate_lambda: float = Field(0.2, ge=0.0)
    lambda_pos: tuple[Annotated[float, Field(gt=0.0)], Annotated[float, Field(gt=0.0)]] = (0.28, 2.0)
    eps: float = Field(4.0, gt=1.0)
    # Share of the gate loss's gradient that reaches the shared backbone and neck: 1.0 is the paper's
    # end-to-end training; 0.0 trains the gates on the detector's features and leaves the detector
    # exactly as a plain YOLOv5 trained without gates (benchmarks/bench_gate_parity.py).
    gate_trunk_grad: float = Field(0.0, ge=0.0, le=1.0)


class AugmentConfig(_Section):
    """Training augmentation, YOLOv5 names (the paper turns mosaic off); 0 turns a part off.

    hsv_*: gains of the hue/saturation/value jitter; fliplr/flipud: flip probabilities;
    scale: zoom range 1 +- scale; translate: shift range as a fraction of the image size.
    """

    hsv_h: float = Field(0.015, ge=0.0)
    hsv_s: float = Field(0.7, ge=0.0)
    hsv_v: float = Field(0.4, ge=0.0)
    fliplr: float = Field(0.5, ge=0.0, le=1.0)
    flipud: float = Field(0.0, ge=0.0, le=1.0)
    scale: float = Field(0.5, ge=0.0, lt=1.0)
    translate: float = Field(0.1, ge=0.0, le=0.5)
    mosaic: bool = False


class TrainConfig(_Section):
    """Schedule and optimiser (YOLOv5 defaults; paper: cosine 0.01 -> 0.001)."""

    epochs: int = Field(10, ge=1)
    batch_size: int = Field(16, ge=1)
    optimizer: Literal["sgd", "adamw"] = "sgd"  # SGD as the paper; AdamW converges faster on short CPU runs
    lr0: float = Field(0.01, gt=0.0)
    lrf: float = Field(0.1, gt=0.0, le=1.0)
    momentum: float = Field(0.937, ge=0.0, lt=1.0)
    weight_decay: float = Field(5e-4, ge=0.0)
    warmup_epochs: float = Field(1.0, ge=0.0)
    warmup_bias_lr: float = 0.1
    ema: bool = True
    precise_bn_batches: int = Field(8, ge=0)  # recompute BatchNorm statistics before validation (0: off)
    amp: bool = True  # fp16 autocast on CUDA, with a gradient scaler
    # bf16 autocast of the forward pass on the CPU ("auto": where the processor has native bf16, as AVX512-BF16;
    # emulated bf16 is slower than fp32). Gate scores, the loss and validation stay fp32. Off by default: on the
    # quickstart it trains 1.2-1.3x faster but ends 0.02-0.06 AP50:95 lower (benchmarks/bench_train_throughput.py).
    bf16: Literal["auto"] | bool = False
    fused_optimizer: bool = True  # the optimiser's fused step (one kernel over all parameters)
    # NHWC tensors in training and validation: oneDNN's and cuDNN's faster convolutions (same weights, different
    # summation order; benchmarks/bench_train_throughput.py measures it).
    channels_last: bool = True
    seed: int = 0
    threads: int | None = Field(None, ge=1)
    # Multiplies lr0 and warmup_bias_lr (a searched hyperparameter: search_spaces may name lr_scale); 0 freezes
    # the weights, a trial made hopeless on purpose.
    lr_scale: float = Field(1.0, ge=0.0)
    loss: LossConfig = LossConfig()
    augment: AugmentConfig = AugmentConfig()
    # What training may change. "none": the whole DH-Net. "detector": the detector is frozen (weights and BatchNorm
    # statistics stay exactly as they start, in the model and its EMA) and only the two gates train, on the gate term
    # of Eq. 15 (lambda * L_gate with the loss section's lambda_pos and eps), without augmentation; best.pt is then
    # the epoch of the most accurate gates, since the detector's AP cannot change (dh_tune/train/gates_only.py).
    freeze: Literal["none", "detector"] = "none"
    # With freeze: detector, the gates' input features (P3, P4) of the training and validation images are kept on the
    # training device up to this many MiB (0.15 MiB an image for the quickstart's n model at 160 px) and every epoch
    # after the first trains from them: the detector runs once per image in the whole run. When they exceed it they
    # are recomputed each epoch, giving the same batches; 0 never keeps them.
    gate_cache_mib: int = Field(2048, ge=0)


class RayConfig(_Section):
    """How training is spread: Ray Train workers, GPUs and failure handling."""

    workers: int = Field(1, ge=1)
    gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0.0)
    max_failures: int = Field(2, ge=0)


class EarlyStopConfig(_Section):
    """Stopping trials whose front lags (ASHA over the per-epoch front hypervolume), or none."""

    scheduler: Literal["asha", "none"] = "asha"
    grace_epochs: int = Field(1, ge=1)  # no trial is stopped before this epoch (ASHA's first rung)
    reduction_factor: int = Field(3, ge=2)  # each rung keeps the best 1/reduction_factor of the trials that reach it


class SearchConfig(_Section):
    """The threshold search: outer training trials and inner threshold trials."""

    trials: int = Field(4, ge=1)
    warm_start: bool = True
    trial_epochs: int = Field(2, ge=1)
    # Epochs of each trial of a search over an imported detector (--from-yolov5): its gates start untrained and
    # train on the frozen detector, seconds an epoch.
    gate_epochs: int = Field(8, ge=1)
    deploy_imgsz: list[int] = Field(default_factory=list)
    threshold_trials: int = Field(400, ge=10)
    grid_steps: int = Field(41, ge=3)
    metric: Literal["ap50", "ap50_95"] = "ap50_95"
    # A gated profile must beat the best static network within the same budget by at least this much AP;
    # otherwise the static network (no gate to compute, as accurate within this margin) is exported.
    min_dynamic_gain: float = Field(0.001, ge=0.0)
    # A path as given, or relative to the pipeline file, or a packaged search space by name (load_pipeline).
    search_space: str = Field(default_factory=default_search_space)
    sampler: Literal["tpe", "nsga2", "random"] = "tpe"
    seed: int = 0
    # Profiles are chosen on calibration images and reported on held-out test images: the dataset's test split,
    # else this share of the val split (stratified by gate labels, seeded by holdout_seed).
    holdout_fraction: float = Field(0.5, gt=0.0, lt=1.0)
    holdout_seed: int = 0
    # The latency statistic over images that a budget bounds. p90: a per-frame budget is about the slow frames,
    # and at most one frame in ten may overrun; p99 would rest on one or two images of a few-hundred-image split.
    budget_stat: Literal["mean", "p90", "p99"] = "p90"
    # "best": the highest AP within the budget; "safest": the fastest profile whose AP interval overlaps the best's.
    select: Literal["best", "safest"] = "best"
    bootstrap_resamples: int = Field(1000, ge=100)  # resamples of the 95% intervals every profile carries
    # Trials at once: as many as the cluster's CPUs and GPUs hold (each trial's Ray Train workers), at most this.
    max_concurrent: int | None = Field(None, ge=1)
    # Every report_every epochs a trial reports AP with all heads, gate accuracy and the hypervolume of its threshold
    # front on report_images calibration images at the training size (grid of report_grid_steps per gate).
    report_every: int = Field(1, ge=1)
    report_images: int = Field(64, ge=4)
    report_grid_steps: int = Field(6, ge=3)
    early_stop: EarlyStopConfig = EarlyStopConfig()
    # Points the outer search trains first, after the paper's: each names a value of every searched hyperparameter.
    first_points: list[dict[str, float]] = Field(default_factory=list)

    @field_validator("deploy_imgsz")
    @classmethod
    def _sizes(cls, v: list[int]) -> list[int]:
        for s in v:
            problem = imgsz_problem(s)
            if problem is not None:
                raise ValueError(f"every size {problem}, got {s}")
        return sorted(set(v))

    @model_validator(mode="after")
    def _rungs_on_reports(self) -> SearchConfig:
        if self.early_stop.grace_epochs % self.report_every:
            raise ValueError(f"early_stop.grace_epochs ({self.early_stop.grace_epochs}) must be a multiple of "
                             f"report_every ({self.report_every}): trials are compared at the epochs they report")
        return self


class Pipeline(_Section):
    """A whole end-to-end configuration."""

    name: str = "quickstart"
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    ray: RayConfig = RayConfig()
    search: SearchConfig = SearchConfig()

    @model_validator(mode="after")
    def _check(self) -> Pipeline:
        if self.train.batch_size < self.ray.workers:
            raise ValueError(f"train.batch_size ({self.train.batch_size}) is smaller than ray.workers ({self.ray.workers})")
        return self

    def with_overrides(self, **sections: dict) -> Pipeline:
        """A copy with some keys replaced, e.g. with_overrides(train={'epochs': 3})."""
        doc = self.model_dump()
        for section, values in sections.items():
            if isinstance(doc.get(section), dict):
                doc[section] = _merge(doc[section], values)
            else:
                doc[section] = values
        return Pipeline.model_validate(doc)


def _merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for k, v in update.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _describe(err: ValidationError) -> str:
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"]) or "(top level)"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    return f"{key}: {msg}" + (f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else "")


def load_pipeline(path: str | Path | None) -> Pipeline:
    """Read and validate a pipeline YAML; None gives the built-in quickstart defaults."""
    if path is None:
        return Pipeline()
    path = Path(path)
    doc = read_yaml_mapping(path, PipelineError, "a mapping of sections (data, model, train, ray, search)")
    try:
        pipeline = Pipeline.model_validate(doc)
    except ValidationError as err:
        raise PipelineError(f"{path}: {_describe(err)}") from None
    # Absolute once found, so the search reads the same file whatever folder it later runs in.
    space = find_file(pipeline.search.search_space, "search_spaces", base=path.resolve().parent)
    return pipeline.with_overrides(search={"search_space": str(space.resolve()) if space.exists() else str(space)})
