"""The paper's algorithms as compiled circuits (Theorems 1 and 2), all written with the front end.

* :func:`sgd` — one-pass SGD over the context, one weight-tied block per example (Theorem 1).
* :func:`ridge` — ridge regression by Sherman–Morrison updates, one weight-tied block per
  example (Theorem 2).

Both read the paper's token layout and return a
:class:`~iclconstruct.compiler.model.ConstructedTransformer` whose readout at the x̃ column of
example ``i + 1`` is the prediction after the first ``i`` examples; ``m.predict(X, y, x_q)``
is the prediction after all of them.

(:func:`sgd_algorithm`, :func:`ridge_algorithm`: the front-end algorithms behind them; the
hand-written programs stay as ``circuits.sgd.sgd_program_by_hand`` and
``circuits.ridge.ridge_program_by_hand``.) Also with the front end (:func:`iclconstruct.algorithm`),
in depth independent of ``n``:

* :func:`batch_gd` — full-batch GD (the paper's "one-step GD" and k-step GD);
* :func:`newton` — iterative Newton / Newton–Schulz, converging to OLS (Fu et al. 2023);
* :func:`gd_plus_plus` — GD++, GD with curvature-corrected inputs (von Oswald et al. 2023);
* :func:`preconditioned_gd` — GD with a fixed preconditioner (Ahn et al. 2023).
"""
from .batch_gd import batch_gd, batch_gd_algorithm
from .gd_plus_plus import gd_plus_plus, gd_plus_plus_algorithm
from .newton import newton, newton_algorithm
from .preconditioned_gd import preconditioned_gd, preconditioned_gd_algorithm
from .ridge import ridge, ridge_algorithm, ridge_gain_program, ridge_program
from .sgd import sgd, sgd_algorithm, sgd_program

__all__ = ["sgd", "ridge", "sgd_program", "ridge_program", "ridge_gain_program", "batch_gd", "newton", "gd_plus_plus",
           "preconditioned_gd", "batch_gd_algorithm", "newton_algorithm", "gd_plus_plus_algorithm",
           "preconditioned_gd_algorithm", "sgd_algorithm", "ridge_algorithm"]

