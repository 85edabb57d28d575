"""Optional dependencies of the exporters, with an error that names the extra to install."""
from __future__ import annotations

import importlib

from ..errors import MissingExtraError

__all__ = ["require"]

#: module -> (pip extra of iclconstruct, what it is for)
_EXTRAS = {
    "transformer_lens": ("tl", "exporting to TransformerLens"),
    "transformers": ("hf", "exporting to Hugging Face transformers"),
    "nnsight": ("nnsight", "tracing with nnsight"),
}


def require(module: str):
    """Import ``module`` or raise :class:`~iclconstruct.errors.MissingExtraError` naming the extra."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        extra, what = _EXTRAS[module]
        raise MissingExtraError(
            f"{what} needs the package {module!r}, which is not installed; "
            f"install it with: pip install 'iclconstruct[{extra}]'"
        ) from exc
