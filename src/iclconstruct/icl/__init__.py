"""Trained in-context learners and their comparison with classical predictors
(Akyürek et al., ICLR 2023, §4–5, App. D–H)."""
from .data import Tasks, sample_tasks, sample_batch, X_DISTS
from .model import ICLTransformer, ModelConfig
from .checkpoint import load, load_weights, save_checkpoint, read_config
from .training import Curriculum, PRESETS, preset, train, TrainResult
from .predictors import (LinearPredictor, KNNPredictor, NamedPredictor, as_predictor, default_predictors,
                         predict_prefixes)
from . import predictors
from .metrics import spd, mspd, ilwd, implicit_weights, error_curve, bootstrap_ci
from .comparison import compare, ComparisonTable, mspd_table
from .probes import (PositionProbe, ProbeResult, fit_position_probe, fit_linear_readout, probe_layers,
                     probe_target, model_hidden_states)
from .shipped import pretrained, list_pretrained
from .cli import add_subcommands
