"""Gradient handling of DH-Net training: clipping per part, and how much of the trunk's gradient
the gate loss contributes (the quantity that decides whether gates cost detection accuracy).
"""
from __future__ import annotations

import math

import torch

from ..loss import DHLoss
from ..model import DHNet


def _split_parameters(model: DHNet) -> tuple[list[torch.nn.Parameter], list[torch.nn.Parameter]]:
    """(trunk and heads, gates): the detector's parameters and the gates' own."""
    gate_ids = {id(p) for p in model.gates.parameters()} if model.gates is not None else set()
    trunk = [p for p in model.parameters() if id(p) not in gate_ids]
    gates = [p for p in model.parameters() if id(p) in gate_ids]
    return trunk, gates


def clip_gradients(model: DHNet, max_norm: float = 10.0) -> None:
    """YOLOv5's gradient clipping, applied to the detector and to the gates separately.

    One norm over both would let a large gate gradient shrink the detector's step; clipped apart,
    the detector trains exactly as it would without gates when the gates read detached features.
    """
    trunk, gates = _split_parameters(model)
    torch.nn.utils.clip_grad_norm_(trunk, max_norm=max_norm)
    if gates:
        torch.nn.utils.clip_grad_norm_(gates, max_norm=max_norm)


def _trunk_grad_norm(loss: torch.Tensor, trunk: list[torch.nn.Parameter]) -> float:
    grads = torch.autograd.grad(loss, trunk, retain_graph=True, allow_unused=True)
    return math.sqrt(sum(float((g.float() ** 2).sum()) for g in grads if g is not None))


def gate_gradient_share(model: DHNet, criterion: DHLoss, images: torch.Tensor, targets: torch.Tensor,
                        gate_labels: torch.Tensor, gate_trunk_grad: float) -> float:
    """|grad_trunk(lambda * L_gate)| / |grad_trunk(L_det)| on one batch (trunk = everything but the gates).

    0 means the gate loss leaves the detector alone; the paper's end-to-end setting (lambda 0.2) measured
    0.66 on a trained quickstart model, and costs detection accuracy in short schedules.
    """
    trunk, _ = _split_parameters(model)
    was_training = model.training
    model.train()
    try:
        maps, logits = model(images, gate_trunk_grad=gate_trunk_grad)
        det, lgate, _ = criterion.terms(maps, logits, targets, gate_labels)
        det_norm = _trunk_grad_norm(det, trunk)
        gate = criterion.cfg.gate_lambda * lgate
        gate_norm = _trunk_grad_norm(gate, trunk) if gate.requires_grad else 0.0
    finally:
        model.train(was_training)
    return gate_norm / det_norm if det_norm > 0 else float("inf")
