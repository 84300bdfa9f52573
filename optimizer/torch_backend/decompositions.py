"""Rewrites of ATen operators that torch.onnx (2.13) exports wrongly or not at all.

:func:`decompose_for_onnx` runs on the program ``torch.export`` produced, before the ONNX
exporter sees it, and decomposes only what the program contains:

- batch norm in training mode: the exporter translates it as an inference-mode
  ``BatchNormalization`` that normalizes with the running statistics instead of the batch's,
  which gives silently wrong outputs; torch's own decomposition (means and variances) exports
  correctly;
- ``convolution_backward`` (every CNN's backward graph): the exporter has no translation;
  :func:`convolution_backward` expresses it with convolutions, which it has;
- ``max_pool2d_with_indices_backward``: torch's decomposition, for the same reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

aten = torch.ops.aten


def _training_batch_norm_ops() -> dict[Any, int | None]:
    """Batch-norm ATen ops -> position of their ``training`` flag (None: always training)."""
    return {
        aten.batch_norm.default: 5,
        aten.native_batch_norm.default: 5,
        aten._native_batch_norm_legit.default: 5,
        aten._native_batch_norm_legit_functional.default: 5,
        aten._native_batch_norm_legit.no_stats: None,
        aten._batch_norm_with_update.default: None,
        aten._batch_norm_with_update_functional.default: None,
    }


def convolution_backward(
    grad_output: torch.Tensor,
    input: torch.Tensor,
    weight: torch.Tensor,
    bias_sizes: Sequence[int] | None,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    transposed: bool,
    output_padding: Sequence[int],
    groups: int,
    output_mask: Sequence[bool],
):
    """``aten.convolution_backward`` of a (not transposed) convolution, in convolutions.

    - input gradient: the transposed convolution of ``grad_output`` with the same weight
      (the adjoint), with the output padding that restores the input's size;
    - weight gradient: a grouped convolution of the input (batch and channel axes swapped)
      with ``grad_output`` as the kernel, stride and dilation exchanged, cut to the kernel's
      size;
    - bias gradient: ``grad_output`` summed over every axis but the channels.

    Returns ``NotImplemented`` (the op stays as it is) for transposed convolutions.
    """
    if transposed:
        return NotImplemented
    spatial = input.dim() - 2
    stride, padding, dilation = list(stride), list(padding), list(dilation)
    kernel = list(weight.shape[2:])
    grad_input = grad_weight = grad_bias = None
    if output_mask[0]:
        extra = [
            input.shape[2 + i]
            - ((grad_output.shape[2 + i] - 1) * stride[i] - 2 * padding[i]
               + dilation[i] * (kernel[i] - 1) + 1)
            for i in range(spatial)
        ]  # fmt: skip
        grad_input = aten.convolution.default(
            grad_output, weight, None, stride, padding, dilation, True, extra, groups
        )
    if output_mask[1]:
        n, c_in = input.shape[0], input.shape[1]
        c_out = grad_output.shape[1]
        cin_g, cout_g = c_in // groups, c_out // groups
        rest_in, rest_out = list(input.shape[2:]), list(grad_output.shape[2:])
        perm = [2, 1, 0, *range(3, 3 + spatial)]
        # input [N, g*cin_g, ...] -> [cin_g, g*N, ...]: channel (group, sample)
        x = input.reshape([n, groups, cin_g, *rest_in]).permute(perm)
        x = x.reshape([cin_g, groups * n, *rest_in])
        # grad_output [N, g*cout_g, ...] -> [g*cout_g, N, ...]: kernel of each output channel
        perm_out = [1, 2, 0, *range(3, 3 + spatial)]
        k = grad_output.reshape([n, groups, cout_g, *rest_out]).permute(perm_out)
        k = k.reshape([c_out, n, *rest_out])
        full = aten.convolution.default(
            x, k, None, dilation, padding, stride, False, [0] * spatial, groups
        )  # [cin_g, c_out, >= kernel...]
        grad_weight = full.transpose(0, 1)
        for i, size in enumerate(kernel):
            grad_weight = grad_weight.narrow(2 + i, 0, size)
        grad_weight = grad_weight.contiguous()
    if output_mask[2]:
        grad_bias = grad_output.sum([0, *range(2, 2 + spatial)])
    return grad_input, grad_weight, grad_bias


def _needs(program) -> dict[Any, Any]:
    """The decompositions the program's graph calls for, by ATen op."""
    from torch._decomp import decomposition_table

    norms = _training_batch_norm_ops()
    wanted: dict[Any, Any] = {}
    for node in program.graph.nodes:
        if node.op != "call_function":
            continue
        target = node.target
        if target in norms:
            flag = norms[target]
            if flag is None or bool(node.args[flag]):
                wanted.update(
                    {op: decomposition_table[op] for op in norms if op in decomposition_table}
                )
        elif target is aten.convolution_backward.default:
            wanted[target] = convolution_backward
        elif target is aten.max_pool2d_with_indices_backward.default:
            wanted[target] = decomposition_table[target]
    return wanted


def decompose_for_onnx(program):
    """``program`` with the operators the module docstring lists decomposed (the program
    itself when it has none of them)."""
    wanted = _needs(program)
    if not wanted:
        return program
    table = torch.export.default_decompositions()
    table.update(wanted)
    return program.run_decompositions(table)
