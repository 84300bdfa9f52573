"""Exceptions that graphopt raises for bad input or failed guarantees.

Every error a user can cause derives from :class:`GraphoptError`; the CLI prints
its message on one line and exits with status 2, never with a traceback.
"""

from __future__ import annotations


class GraphoptError(Exception):
    """Base class of every error graphopt reports to a user."""


class ModelLoadError(GraphoptError):
    """The file is missing, unreadable, not ONNX, truncated or malformed."""


class UnsafeExternalDataError(ModelLoadError):
    """An external-data location points outside the model's folder."""


class UnsupportedModelError(GraphoptError):
    """The model uses a construct graphopt cannot represent or export."""


class ShapeError(GraphoptError):
    """A shape override is malformed or contradicts the model."""


class CheckFailedError(GraphoptError):
    """The optimized model's outputs differ from the original's."""


class CheckUnavailableError(GraphoptError):
    """The numeric check could not run (for example onnxruntime cannot load the model)."""
