"""Errors of the explanation module (all :class:`~optimizer.errors.GraphoptError`: the CLI prints
their message on one line and exits with status 2)."""

from __future__ import annotations

from collections.abc import Sequence

from optimizer.errors import GraphoptError


class ExplainError(GraphoptError):
    """Bad input to an explanation: unknown tensor name, wrong shape, bad target or option."""


class AutodiffError(ExplainError):
    """The vector-Jacobian-product graph of the model cannot be built."""


class UnsupportedOpError(AutodiffError):
    """Ops on the path from the inputs to the output have no VJP rule.

    ``ops`` lists them (sorted); the message names each with how often it occurs and the
    name of one node, so a user sees at once what blocks the gradient.
    """

    def __init__(self, ops: Sequence[str], detail: str) -> None:
        self.ops = sorted(ops)
        super().__init__(detail)
