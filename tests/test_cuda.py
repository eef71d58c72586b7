"""CUDA: same codes and gradients as on the CPU (skipped without a GPU)."""

import pytest
import torch

import diffsc
from helpers import problem_data

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
]


@pytest.mark.parametrize("family", ["gaussian", "softmax"])
@pytest.mark.parametrize("prior", ["kl", "signed_kl", "l1"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_matches_cpu(family, prior, dtype):
    x, basis = problem_data(family, n=64, d=20, k=16, dtype=dtype)
    kw = dict(family=family, prior=prior, strength=0.2, prior_mean=0.05)
    grads = []
    for device in ("cpu", "cuda"):
        b = basis.to(device).detach().requires_grad_()  # a leaf on each device
        w = diffsc.sparse_code(x.to(device), b, **kw)
        w.square().sum().backward()
        grads.append((w.detach().cpu(), b.grad.cpu()))
    tol = dict(rtol=1e-3, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(grads[1][0], grads[0][0], **tol)
    torch.testing.assert_close(grads[1][1], grads[0][1], **tol)


def test_cuda_device_mismatch_is_an_error():
    x, basis = problem_data("gaussian")
    with pytest.raises(ValueError, match=r"x: on device cpu but the basis is on cuda"):
        diffsc.sparse_code(x, basis.cuda())
