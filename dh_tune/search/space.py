"""The outer search space (search_spaces/*.yaml): gate-loss hyperparameters and their ranges.

Each entry names a `train.loss` setting (gate_lambda, lambda_pos_1, lambda_pos_2, eps, gate_trunk_grad) or the
training's lr_scale (a multiplier of its learning rate).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..messages import InputError
from ..pipeline import LossConfig
from ..yamlfile import read_yaml_mapping

LOSS = ("gate_lambda", "lambda_pos_1", "lambda_pos_2", "eps", "gate_trunk_grad")
KNOWN = (*LOSS, "lr_scale")
LAMBDA_POS = ("lambda_pos_1", "lambda_pos_2")
"""The search parameters of `train.loss.lambda_pos`, gate 1's and gate 2's."""

PAPER_POINT = {"gate_lambda": 0.2, "lambda_pos_1": 0.28, "lambda_pos_2": 2.0, "eps": 4.0, "gate_trunk_grad": 1.0,
               "lr_scale": 1.0}
"""The paper's setting (section 3.3): trained end to end, the gate gradient flowing into the trunk, at its own
learning rate. The outer search trains it first."""


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
        if k in LAMBDA_POS:
            lp[LAMBDA_POS.index(k)] = float(v)
        elif k == "lr_scale":
            out[k] = float(v)
        elif k in LOSS:
            loss[k] = float(v)
    loss["lambda_pos"] = lp
    return out


def loss_params(loss: dict[str, Any]) -> dict[str, float]:
    """A `train.loss` section (a pipeline's or a checkpoint's, as a dict) as search parameters: the inverse
    of `train_overrides` on the loss keys."""
    out = {"gate_lambda": float(loss["gate_lambda"])}
    out.update({name: float(v) for name, v in zip(LAMBDA_POS, loss["lambda_pos"])})
    out.update(eps=float(loss["eps"]),
               gate_trunk_grad=float(loss.get("gate_trunk_grad", LossConfig.model_fields["gate_trunk_grad"].default)))
    return out


def paper_point(dims: list[Dimension]) -> dict[str, float]:
    """The paper's setting, restricted to the searched dimensions."""
    names = {d.name for d in dims}
    return {k: v for k, v in PAPER_POINT.items() if k in names}


def is_paper_point(params: dict[str, float]) -> bool:
    """True when a trial's sampled hyperparameters are the paper's (section 3.3)."""
    shared = [k for k in params if k in PAPER_POINT]
    return bool(shared) and all(abs(float(params[k]) - PAPER_POINT[k]) < 1e-9 for k in shared)


def paper_setting(gates_only: bool) -> str:
    """The paper's setting in words, for the summary (gates-only: trained on a frozen detector, no lambda)."""
    p = PAPER_POINT
    loss = f"lambda_pos {p['lambda_pos_1']}/{p['lambda_pos_2']}, eps {p['eps']:g}"
    if gates_only:
        return f"{loss}, gates trained on the frozen detector"
    return f"lambda {p['gate_lambda']:g}, {loss}, end to end"


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
