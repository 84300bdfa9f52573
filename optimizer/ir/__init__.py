"""graphopt's intermediate representation: typed, immutable, hash-consed SSA graphs."""

from optimizer.ir.graph import (
    CONSTANT_OP,
    INPUT_OP,
    IR_DOMAIN,
    Attr,
    Graph,
    IRCheckError,
    ModelMeta,
    Node,
    NodeMeta,
    Subgraph,
    Value,
    check_graph,
    constant,
    graph_input,
    transform,
)
from optimizer.ir.ops import REGISTRY, OpDef, OpRegistry
from optimizer.ir.tensor import TensorData
from optimizer.ir.types import UNKNOWN, Dim, DType, OpaqueType, Shape, TensorType, ValueType

__all__ = [
    "CONSTANT_OP",
    "INPUT_OP",
    "IR_DOMAIN",
    "REGISTRY",
    "UNKNOWN",
    "Attr",
    "DType",
    "Dim",
    "Graph",
    "IRCheckError",
    "ModelMeta",
    "Node",
    "NodeMeta",
    "OpDef",
    "OpRegistry",
    "OpaqueType",
    "Shape",
    "Subgraph",
    "TensorData",
    "TensorType",
    "Value",
    "ValueType",
    "check_graph",
    "constant",
    "graph_input",
    "transform",
]
