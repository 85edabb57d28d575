"""Trained in-context learners and their comparison with classical predictors
(Akyürek et al., ICLR 2023, §4–5, App. D–H)."""
from .data import Tasks, sample_tasks, sample_batch, X_DISTS
from .model import ICLTransformer, ModelConfig
from .checkpoint import load, load_weights, save_checkpoint, read_config
from .train import Curriculum, PRESETS, preset, train, TrainResult
