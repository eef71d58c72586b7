"""The backward pass: implicit differentiation of the codes (SPEC §2, appendix C).

At the code ``w`` the optimality condition ``Phi = B^T (f(Bw) - x) + lam grad R(w) = 0``
holds, so for a downstream gradient ``g = dl/dw`` and ``v = H^{-1} g`` with
``H = dPhi/dw = B^T S B + lam R''(w)`` the implicit function theorem gives
``dl/dtheta = -v^T dPhi/dtheta`` for every input ``theta``:

    dl/dB   = -(r - x) v^T - S B v w^T        (dPhi/dB_ki = e_i (r - x)_k + B^T dr/dB_ki; eq. 12)
    dl/dx   = B v                             (dPhi/dx = -B^T)
    dl/dlam = -v * grad R(w)                  (dPhi/dlam = grad R(w))
    dl/dp   = -lam v * d grad R / dp          (KL: lam v / p)

summed over the batch. For L1 the same holds on the support (``v = 0`` off it;
Mairal et al., TPAMI 2012). One solve with ``H`` per example (for smooth
priors by conjugate gradients with batched Hessian products, for L1 a
factorisation on the support); nothing depends on how many iterations the
forward solve took.
"""

from __future__ import annotations

from .hessian import hessian_solve


def pullback(problem, x, basis, lam, p, w, g, needs=(True, True, True, True)):
    """Gradients of a loss w.r.t. ``(x, basis, lam, p)`` from ``g = dl/dw``.

    ``x`` is the family's prepared target (``x_bar`` for softmax). Entries of
    ``needs`` that are False come back as None.
    """
    # (gaussian: S = I, so neither the solve nor dl/dB needs r = B w)
    r = None if problem.family.name == "gaussian" else problem.reconstruction(basis, w)
    v, ok = hessian_solve(problem, basis, lam, p, w, r, g)
    if not bool(ok.all()):
        bad = (~ok).nonzero().squeeze(1)[:5].tolist()
        raise RuntimeError(
            f"codes: the Hessian B^T S B + lam R''(w) is singular at examples {bad}, so the "
            "code is not differentiable there (e.g. a uniform prior with more atoms than "
            "dimensions, or an L1 support larger than the dimension)"
        )
    need_x, need_basis, need_lam, need_p = needs
    grad_x = v @ basis.T if need_x else None
    grad_basis = _basis_gradient(problem, x, basis, w, v, r) if need_basis else None
    grad_lam = (-v * problem.prior.grad(w, p)).sum_to_size(lam.shape) if need_lam else None
    grad_p = (-lam * v * problem.prior.grad_mean(w, p)).sum_to_size(p.shape) if need_p else None
    return grad_x, grad_basis, grad_lam, grad_p


def _basis_gradient(problem, x, basis, w, v, r):
    """``dl/dB = -(r - x)^T v - (S B v)^T w``: four ``N x D x K`` products.

    Gaussian (``S = I``, ``r = B w``): ``x^T v - B (P + P^T)`` with the
    ``K x K`` matrix ``P = w^T v``, one ``N x D x K`` product, one
    ``N x K x K`` and one ``D x K x K``, fewer operations where ``K (D + N)
    < 3 N D`` (for large batches: ``K < 3 D``; at 784x256 from 96 rows).
    On ``codes.py``'s 784x256 problem (N = 10,000) the L1 backward fell from
    0.28 s (2.4x the forward) to 0.085 s, on 784x512 from 0.52 s to 0.25 s.
    ``r`` is None for the gaussian family. The second product is added into
    the first (``addmm_``): with their difference and its sign as passes of
    their own, one 784x256 input's general form took 140 us, not 100 (ad
    hoc, alternating), and the ``D x K`` passes weighed most below 64 rows."""
    if r is None:
        (d, k), n = basis.shape, w.shape[0]
        if k * (d + n) < 3 * n * d:
            p = w.T @ v
            return (x.T @ v).addmm_(basis, p + p.T, alpha=-1)
        r = w @ basis.T
    s_bv = problem.family.curvature_apply(r, v @ basis.T)
    return ((x - r).T @ v).addmm_(s_bv.T, w, alpha=-1)
