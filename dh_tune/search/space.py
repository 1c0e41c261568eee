"""The outer search space (search_spaces/*.yaml): gate-loss hyperparameters and their ranges.

Each entry names a `train.loss` setting (gate_lambda, lambda_pos_1, lambda_pos_2, eps, gate_trunk_grad) or the
training's lr_scale (a multiplier of its learning rate).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..messages import InputError
from ..yamlfile import read_yaml_mapping

LOSS = ("gate_lambda", "lambda_pos_1", "lambda_pos_2", "eps", "gate_trunk_grad")
KNOWN = (*LOSS, "lr_scale")


class SearchSpaceError(InputError):
    """A search-space file that cannot be used (one line: the file, the key and the reason)."""


@dataclass(frozen=True)
class Dimension:
    """One searched hyperparameter: a float or int range, optionally log-scaled."""

    name: str
    kind: Literal["float", "int"]
    low: float
    high: float
    log: bool = False

    def tune_domain(self):
        """The Ray Tune domain that OptunaSearch translates into an Optuna distribution."""
        from ray import tune

        if self.kind == "int":
            return tune.lograndint(int(self.low), int(self.high) + 1) if self.log else tune.randint(int(self.low), int(self.high) + 1)
        return tune.loguniform(self.low, self.high) if self.log else tune.uniform(self.low, self.high)


def load_space(path: str | Path) -> list[Dimension]:
    """Read and validate a search-space YAML."""
    path = Path(path)
    doc = read_yaml_mapping(path, SearchSpaceError, "a mapping of hyperparameter -> {type, low, high, log}")
    dims = []
    for name, spec in doc.items():
        if name not in KNOWN:
            raise SearchSpaceError(f"{path}: {name}: unknown hyperparameter (known: {', '.join(KNOWN)})")
        if not isinstance(spec, dict):
            raise SearchSpaceError(f"{path}: {name}: expected {{type, low, high, log}}")
        extra = set(spec) - {"type", "low", "high", "log"}
        if extra:
            raise SearchSpaceError(f"{path}: {name}.{sorted(extra)[0]}: unknown key")
        kind = spec.get("type", "float")
        try:
            low, high = float(spec["low"]), float(spec["high"])
        except KeyError as exc:
            raise SearchSpaceError(f"{path}: {name}.{exc.args[0]}: missing") from None
        except (TypeError, ValueError):
            raise SearchSpaceError(f"{path}: {name}: low and high must be numbers") from None
        if kind not in ("float", "int"):
            raise SearchSpaceError(f"{path}: {name}.type: must be float or int, got {kind!r}")
        if not low < high:
            raise SearchSpaceError(f"{path}: {name}: low ({low}) must be below high ({high})")
        log = bool(spec.get("log", False))
        if log and low <= 0:
            raise SearchSpaceError(f"{path}: {name}: a log range needs low > 0")
        if name == "gate_trunk_grad" and not (0.0 <= low and high <= 1.0):
            raise SearchSpaceError(f"{path}: gate_trunk_grad: a share of the gradient lies in [0, 1], got [{low}, {high}]")
        if name == "lr_scale" and low < 0:
            raise SearchSpaceError(f"{path}: lr_scale.low: a learning-rate multiplier cannot be negative")
        if name == "eps" and low <= 1:
            raise SearchSpaceError(f"{path}: eps.low: epsilon must exceed 1 (Eq. 5 compares ratios >= 1)")
        dims.append(Dimension(name, kind, low, high, log))
    return dims


def train_overrides(params: dict[str, Any], base_lambda_pos: tuple[float, float]) -> dict[str, Any]:
    """Sampled values -> the `train` section overrides of a pipeline (its `loss` keys and lr_scale)."""
    loss: dict[str, Any] = {}
    out: dict[str, Any] = {"loss": loss}
    lp = list(base_lambda_pos)
    for k, v in params.items():
        if k == "lambda_pos_1":
            lp[0] = float(v)
        elif k == "lambda_pos_2":
            lp[1] = float(v)
        elif k == "lr_scale":
            out[k] = float(v)
        elif k in LOSS:
            loss[k] = float(v)
    loss["lambda_pos"] = lp
    return out


def check_points(points: list[dict[str, float]], dims: list[Dimension], where: str) -> None:
    """SearchSpaceError unless every point names a value inside the range of each searched dimension."""
    names = {d.name for d in dims}
    for i, point in enumerate(points):
        missing, extra = sorted(names - set(point)), sorted(set(point) - names)
        if missing or extra:
            raise SearchSpaceError(f"{where}[{i}]: " + (f"missing {', '.join(missing)}" if missing else
                                                        f"{', '.join(extra)} is not in the search space"))
        for d in dims:
            if not d.low <= float(point[d.name]) <= d.high:
                raise SearchSpaceError(f"{where}[{i}].{d.name}: {point[d.name]} lies outside [{d.low:g}, {d.high:g}]")
