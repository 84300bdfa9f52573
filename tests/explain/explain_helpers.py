"""Helpers shared by the explanation tests (imported as a top-level module: pytest puts this
folder on sys.path)."""

from __future__ import annotations


def last_op_output(path, op: str) -> str:
    """The output name of the last node of type ``op`` in an ONNX file."""
    import onnx

    names = [n.output[0] for n in onnx.load(str(path)).graph.node if n.op_type == op]
    assert names, f"no {op} in {path}"
    return names[-1]
