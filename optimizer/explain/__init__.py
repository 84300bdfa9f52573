"""Explanations of ONNX models on graphopt's IR: autodiff, attributions, GNN and recsys.

- IR autodiff: :func:`build_vjp` turns a model into its vector-Jacobian-product graph (one
  onnxruntime run gives the output and ``J^T u`` for inputs and named intermediates);
  :func:`supported_ops` lists the differentiable ops.
- :class:`GradientModel`: a model with its forward, gradient and masked sessions, batched.
- Gradient methods: :func:`saliency`, :func:`input_x_gradient`, :func:`integrated_gradients`,
  :func:`smoothgrad`, :func:`grad_cam`.
- Perturbation methods with masks applied inside the graph: :func:`occlusion`, :func:`rise`,
  :func:`kernel_shap`; faithfulness: :func:`deletion_insertion`.
- :func:`save_heatmap`: a PNG over the input image.
- :mod:`optimizer.explain.gnn` (GNNExplainer on a GCN) and :mod:`optimizer.explain.recsys`
  (recommendations explained by past items) build on the same gradients.

Torch is never needed to explain a model; it is used only to train the demonstration models
of the GNN and recommendation modules. See docs/explanation.md.
"""

from optimizer.explain.attribution import (
    Attribution,
    grad_cam,
    input_x_gradient,
    integrated_gradients,
    saliency,
    smoothgrad,
)
from optimizer.explain.autodiff import GradientGraph, build_vjp, supported_ops
from optimizer.explain.errors import AutodiffError, ExplainError, UnsupportedOpError
from optimizer.explain.gradients import GradientModel
from optimizer.explain.graph_edit import add_mask_input, cut_at
from optimizer.explain.heatmap import save_heatmap
from optimizer.explain.metrics import deletion_insertion
from optimizer.explain.perturbation import kernel_shap, occlusion, rise

__all__ = [
    "Attribution",
    "AutodiffError",
    "ExplainError",
    "GradientGraph",
    "GradientModel",
    "UnsupportedOpError",
    "add_mask_input",
    "build_vjp",
    "cut_at",
    "deletion_insertion",
    "grad_cam",
    "input_x_gradient",
    "integrated_gradients",
    "kernel_shap",
    "occlusion",
    "rise",
    "saliency",
    "save_heatmap",
    "smoothgrad",
    "supported_ops",
]
