"""graphopt: a verified graph-level optimizer for ONNX models.

>>> import optimizer
>>> optimized = optimizer.optimize("model.onnx")          # doctest: +SKIP
>>> report = optimizer.optimize_file("model.onnx")        # doctest: +SKIP
"""

from optimizer.api import OptimizeOptions, OptimizeReport, optimize, optimize_file
from optimizer.errors import (
    CheckFailedError,
    CheckUnavailableError,
    GraphoptError,
    ModelLoadError,
    ShapeError,
    UnsupportedModelError,
)

__version__ = "0.1.0"

__all__ = [
    "CheckFailedError",
    "CheckUnavailableError",
    "GraphoptError",
    "ModelLoadError",
    "OptimizeOptions",
    "OptimizeReport",
    "ShapeError",
    "UnsupportedModelError",
    "__version__",
    "optimize",
    "optimize_file",
]
