"""The package version (a module of its own: the engine records it in checkpoints without importing the package facade)."""
__version__ = "0.1.0"
