"""Running compiled circuits at scale.

* :mod:`~iclconstruct.runtime.plan` — the dependency-pruned schedule: which (column, layer)
  cells the readout depends on, derived from the compiler's schedule (fixed points of the
  weight-tied loop, liveness from the readout).
* :mod:`~iclconstruct.runtime.engine` — runs the model's own blocks on those cells only,
  with attention over a key/value cache of just the columns the heads read.
* :mod:`~iclconstruct.runtime.stream` — ``model.predict_prefixes`` and ``model.stream()``.
* :mod:`~iclconstruct.runtime.sparse` — the same blocks on structured-sparse weights
  (``model.to_sparse()``, ``model.to_dense()``).
* :mod:`~iclconstruct.runtime.checks` — range checks batched on the device.
"""
from .checks import RangeMonitor
from .plan import CellPlan, change_flags, plan_cells
from .sparse import SparseBlock, dense_model, density, sparse_model
from .stream import Stream, cell_plan, memo_layers, predict_prefixes, run_pruned

__all__ = ["CellPlan", "plan_cells", "change_flags", "cell_plan", "memo_layers", "run_pruned", "predict_prefixes",
           "Stream", "SparseBlock", "sparse_model", "dense_model", "density", "RangeMonitor"]
