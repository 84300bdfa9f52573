"""The decompositions applied before the ONNX export equal the operators they replace."""

from __future__ import annotations

import itertools

import pytest

torch = pytest.importorskip("torch", reason="needs the torch extra")

pytestmark = pytest.mark.torch

from optimizer.torch_backend.decompositions import convolution_backward  # noqa: E402

aten = torch.ops.aten


#: spatial dims x stride x padding x dilation x groups x bias
CASES = list(itertools.product([1, 2, 3], [1, 3], [0, 2], [1, 2], [1, 4], [True, False]))


def test_convolution_backward_matches_aten_on_every_configuration():
    gen = torch.Generator().manual_seed(0)
    checked = 0
    for dims, stride, pad, dil, groups, bias in CASES:
        sizes, kernel = [11, 9, 7][:dims], [3, 2, 1][:dims]
        x = torch.randn(3, 4, *sizes, dtype=torch.float64, generator=gen)
        w = torch.randn(8, 4 // groups, *kernel, dtype=torch.float64, generator=gen)
        conv = [[stride] * dims, [pad] * dims, [dil] * dims, False, [0] * dims, groups]
        y = aten.convolution(x, w, None, *conv)
        g = torch.randn(y.shape, dtype=torch.float64, generator=gen)
        args = (g, x, w, [8] if bias else None, *conv, [True, True, bias])
        for want, got in zip(aten.convolution_backward(*args), convolution_backward(*args)):
            if want is None:
                assert got is None
            else:
                torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
        checked += 1
    assert checked == len(CASES)


def test_partial_masks_and_transposed_convolutions():
    x, w = torch.randn(2, 4, 8, 8), torch.randn(6, 2, 3, 3)
    conv = [[2, 2], [1, 1], [1, 1], False, [0, 0], 2]
    g = torch.randn(aten.convolution(x, w, None, *conv).shape)
    gi, gw, gb = convolution_backward(g, x, w, None, *conv, [False, True, False])
    assert gi is None and gb is None
    torch.testing.assert_close(
        gw, aten.convolution_backward(g, x, w, None, *conv, [False, True, False])[1]
    )
    transposed = [[1, 1], [0, 0], [1, 1], True, [0, 0], 1]
    assert convolution_backward(g, x, w, None, *transposed, [True] * 3) is NotImplemented
