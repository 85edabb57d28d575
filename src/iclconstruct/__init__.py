"""iclconstruct: constructive transformers that run learning algorithms in context."""
from . import errors, tokens

__version__ = "0.1.0"
