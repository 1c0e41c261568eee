"""Training: the plain PyTorch loop and Ray Train around it (checkpoints are dh_tune.model.checkpoint)."""
from .loop import RunContext, train_loop

__all__ = ["RunContext", "train_loop"]
