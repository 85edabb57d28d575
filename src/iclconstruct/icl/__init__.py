"""Trained in-context learners and their comparison with classical predictors
(Akyürek et al., ICLR 2023, §4–5, App. D–H).

Modules, one job each: ``data`` (task samplers), ``model`` (ICLTransformer), ``training``
(train loop, presets, curriculum), ``checkpoint`` (safetensors I/O), ``predictors`` (one
predict interface), ``metrics`` (SPD, ILWD, MSPD, R², bootstrap), ``comparison`` (tables),
``sweep`` (layers × width capacity sweep, Fig. 3), ``probes`` (§5 probes), ``plots`` (figures),
``shipped`` (bundled learners), ``cli`` (jobs).
"""
from . import predictors
from .checkpoint import load, load_weights, read_config, save_checkpoint
from .cli import add_subcommands
from .comparison import ComparisonTable, compare, compare_many, mspd_table, ranking_markdown
from .data import X_DISTS, Tasks, sample_batch, sample_tasks
from .metrics import bootstrap_ci, error_curve, ilwd, implicit_weights, mspd, spd
from .model import ICLTransformer, ModelConfig
from .predictors import (KNNPredictor, LinearPredictor, NamedPredictor, as_predictor, default_predictors,
                         predict_prefixes)
from .probes import (PositionProbe, ProbeResult, circuit_hidden_states, fit_linear_readout, fit_position_probe,
                     model_hidden_states, probe_layers, probe_target)
from .shipped import list_pretrained, pretrained
from .sweep import plot_sweep, read_sweep, reference_predictors, run_sweep
from .training import PRESETS, Curriculum, TrainResult, preset, train

__all__ = [
    "Tasks", "sample_tasks", "sample_batch", "X_DISTS",
    "ICLTransformer", "ModelConfig",
    "train", "TrainResult", "Curriculum", "PRESETS", "preset",
    "load", "load_weights", "save_checkpoint", "read_config", "pretrained", "list_pretrained",
    "predictors", "LinearPredictor", "KNNPredictor", "NamedPredictor", "as_predictor", "default_predictors",
    "predict_prefixes",
    "spd", "mspd", "ilwd", "implicit_weights", "error_curve", "bootstrap_ci",
    "compare", "compare_many", "ranking_markdown", "ComparisonTable", "mspd_table",
    "run_sweep", "read_sweep", "plot_sweep", "reference_predictors",
    "PositionProbe", "ProbeResult", "fit_position_probe", "fit_linear_readout", "probe_layers", "probe_target",
    "model_hidden_states", "circuit_hidden_states",
    "add_subcommands",
]
