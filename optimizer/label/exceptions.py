"""Errors the labelling module reports for bad input (all :class:`GraphoptError`\\ s: the CLI
prints one line and exits with status 2)."""

from __future__ import annotations

from optimizer.errors import GraphoptError


class LabelDataError(GraphoptError):
    """A dataset, label file or record file is missing, empty, malformed or does not fit."""


class LabelModelError(GraphoptError):
    """The model cannot serve as a classifier here (no suitable output, no Dropout, ...)."""


class LabelBackendError(GraphoptError):
    """The Ray backend is not installed or cannot reach its cluster."""
