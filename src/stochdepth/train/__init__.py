"""Training: the paper's recipes, the trainer, checkpoints and run folders."""

from stochdepth.config import TrainConfig
from stochdepth.train.recipes import list_presets, preset
from stochdepth.train.trainer import load_trained_model, resume, train

__all__ = ["TrainConfig", "list_presets", "load_trained_model", "preset", "resume", "train"]
