"""The algorithm front end: numpy-like Python → expression DAG → Program → transformer.

* :mod:`.expr` — traced values, shapes, interval bounds, levels (what reads what);
* :mod:`.trace` — the ``ctx`` an algorithm sees, tracing, common-subexpression reuse, loops;
* :mod:`.semantics` — the exact numpy meaning of every node (and direct evaluation);
* :mod:`.lower` — linear folding, instruction selection, slot allocation by liveness;
* :mod:`.algorithm` — ``@ic.algorithm`` and :class:`Algorithm`.
"""
from .algorithm import Algorithm, algorithm
from .expr import Expr, FrontendError
from .trace import Context

__all__ = ["algorithm", "Algorithm", "Context", "Expr", "FrontendError"]
