"""The language: the residual-stream ``layout`` (named slots), the ``ops`` as data, input
``guards`` as data, the ``program`` that records them (an event log), what the ``embedding``
writes into the system slots, the exact float64 ``interpreter`` (RAW semantics,
Definition C.2), the run-time ``checks`` shared with the compiled model, and ``serialize``
(programs as JSON-able dicts). Nothing here imports the compiler.
"""
