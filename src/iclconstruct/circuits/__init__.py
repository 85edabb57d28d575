"""The paper's algorithms as compiled circuits (Theorems 1 and 2).

* :func:`sgd` — one-pass SGD over the context, one weight-tied block per example (Theorem 1).
* :func:`ridge` — ridge regression by Sherman–Morrison updates, one weight-tied block per
  example (Theorem 2).

Both read the paper's token layout and return a
:class:`~iclconstruct.compiler.model.ConstructedTransformer` whose readout at the x̃ column of
example ``i + 1`` is the prediction after the first ``i`` examples; ``m.predict(X, y, x_q)``
is the prediction after all of them.
"""
from .ridge import ridge, ridge_program
from .sgd import sgd, sgd_program

__all__ = ["sgd", "ridge", "sgd_program", "ridge_program"]

