"""Training: the plain PyTorch loop, its checkpoints, and Ray Train around it."""
from .checkpoint import CheckpointError, build_model, load_checkpoint, load_model, save_checkpoint
from .loop import RunContext, train_loop

__all__ = ["CheckpointError", "RunContext", "build_model", "load_checkpoint", "load_model", "save_checkpoint",
           "train_loop"]
