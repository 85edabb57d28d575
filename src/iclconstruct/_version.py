"""The library version, in a module of its own so that any module may read it without
importing the package (and everything the package imports)."""
__version__ = "0.1.0"
