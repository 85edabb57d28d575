"""The language: the residual-stream ``layout`` (named slots), the ``ops`` as data, the
``program`` that records them, its exact float64 ``interpreter`` (RAW semantics,
Definition C.2) and the run-time ``checks`` shared with the compiled model.
"""
