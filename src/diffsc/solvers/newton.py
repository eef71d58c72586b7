"""Damped Newton in the prior's mirror coordinates, for smooth priors.

Each iteration solves ``H step = -grad F`` with the well-conditioned scaled
system of :mod:`diffsc.hessian`, then moves along the curve
``s(w) = s(w_k) + t s'(w_k) step`` in the mirror coordinates ``s = grad R(w)``
(``log(w/p)`` for KL, ``asinh(w/2p)`` for signed KL, ``w`` for L2). The curve
leaves ``w_k`` along the Newton direction, so near the optimum the method is
Newton's (quadratic convergence); far from it, it keeps KL codes positive and
moves a code by orders of magnitude in one step, which is exactly right for
the separable part of the objective. ``t`` is backtracked per example from 1
until Armijo's condition holds, tested on ``F``'s change
(``f - f0 <= 1e-4 t slope``): ``f <= f0 + 1e-4 t slope`` rounds to
``f <= f0`` for small ``t``, and float32 codes of weak priors took points
whose ``F`` had not moved for hundreds of steps. The full step is also
taken when it halves the gradient's norm and leaves ``F`` unchanged to rounding: near the optimum
the decrease of ``F`` drops below its rounding error while the gradient still
measures progress exactly. That norm is optimality's
(:meth:`~diffsc.priors.SmoothPrior.optimality_gradient`): a KL code held at
the floor that still wants to shrink counts 0. Counted, its gradient (4.3 on
a poisson code) hid the halving of the rest, and such codes stalled within
a few times ``tol`` for hundreds of steps.

The exponential families' losses (poisson, softmax, bernoulli) are quadratic
only near a point: a row's steps are damped while its full step is refused
and the loss strays from its quadratic model at the Newton point
(Marquardt's ``H + mu diag(H)``, :func:`_damping`), and undamped again as
the steps fit.

Signed-KL steps whose curve fails at ``t = 1`` and ``1/2`` also try the
straight line ``w + t w'(0)`` (same tangent, same slope) from ``t = 1/4``
on, and take the lower ``F``. Under a weak prior most of a step lies along ``B``'s
near-null space, where only the straight line keeps the loss: the curve,
exponential in ``s``, leaves it at once, and from the ridge codes
(``newton_cg``'s start) the line search then cut every step to a hundredth,
for hundreds of steps (λ = 1e-6, p = 0.01, 30 x 60: none of 100 codes
converged in 100 steps; with the line, all in 18 on average). Offered from
``t = 1`` on, the line cost steps from the prior's minimiser (9 -> 21 at
p = 1e-4). L2's line is its curve.

KL steps do the same with the line bent where it would leave ``w > 0``,
``max(w + t d, w e^(-30 t))``, along the whole Newton step ``d``. Weak
KL priors (λ = p = 1e-4, ``K > D``) are nearly nonnegative least squares,
their steps nearly all along ``B``'s null space, and the curve shrinks the
small codes there exponentially: whole steps were scaled to a tenth by
those codes' limits, and the residual stood still for dozens of steps. On
``benchmarks/robustness.py``'s KL problems at λ = p = 1e-4 the bent line
took the Newton steps from 31,459 to 19,429 (float32) and from 32,641 to
20,140 (float64), and 3 of the 4 batches that 300 steps left short there
converged.
"""

from __future__ import annotations

import torch

from ..hessian import hessian_solve
from .result import FLAT_ULPS, SolveResult, flat

_ARMIJO = 1e-4
_MAX_BACKTRACK = 40
# A step moves a mirror coordinate by at most this much (a factor e^30 for a
# KL code): larger steps overflow. KL codes further from their optimum jump.
_MAX_MIRROR_STEP = 30.0


def _far(problem, basis, lam, p, w, r, grad_loss):
    """KL codes whose optimum lies more than e^30 away, and the steps to it.

    Predicted coordinate by coordinate from the one-coordinate quadratic
    model with the diagonal curvature ``G_ii`` (:meth:`KL.coordinate_log_step`).
    Newton solves with them held out and they jump to the model's minimiser,
    which may be e^-700 (then the dtype's floor) or e^+500 away: limited to
    e^30 a step, they would take dozens of steps, and cut the others' too.
    """
    if not problem.prior.has_floor:
        return None, None
    gii = problem.family.gram_diagonal(basis, r)
    lam_w, p_w = lam.expand_as(w), p.expand_as(w)
    # The model's first Newton step in log(w) picks the few candidates, so the
    # exact jump (a dozen iterations of exp) is computed for those alone.
    g = grad_loss + lam_w * problem.prior.grad(w, p)
    step = -g / (w * gii + lam_w)
    maybe = step.abs() > _MAX_MIRROR_STEP / 2
    if bool(maybe.any()):
        exact = problem.prior.coordinate_log_step(w[maybe], p_w[maybe], lam_w[maybe], grad_loss[maybe], gii[maybe])
        step = step.masked_scatter(maybe, exact)
    return maybe & (step.abs() > _MAX_MIRROR_STEP), step


def _jump_bound(prior, w, p, f, lam):
    """The largest rise of a KL code's mirror coordinate that can keep ``F <= f``.

    The loss is >= 0, so ``lam R(v) <= f`` for every code ``v`` of such a
    point, and ``R(v) >= v`` once ``log(v / p) >= 2``. Where the one-coordinate
    model's curvature vanishes (a saturated softmax) its jump would overshoot
    that, to a code that overflows the dtype: an infinite slope, and no step
    ever accepted.
    """
    tiny = torch.finfo(w.dtype).tiny
    top = prior.mirror((f[:, None] / lam).clamp_min(tiny), p).clamp_min(2.0)  # log(v / p)
    return top - prior.mirror(w, p)


def _limit(prior, w, p, g, step, far=None, far_step=None, f=None, lam=None):
    """The step in mirror coordinates, each entry limited, its slope, and the
    jumps that rise (None if none).

    Limiting entry by entry keeps the large moves of the others; where
    scaling the whole step down instead (still Newton's direction) descends
    faster, as where limiting spoils descent, the step of the entries that
    do not jump is scaled. The slope ``<g, w'(0)>``
    is that of the curve actually taken. Given the rows' objective ``f`` (and
    ``lam``), no jump goes beyond :func:`_jump_bound`. Rising jumps take the
    straight line to their target (:func:`_rise`), so that their slope is
    the chord's.
    """
    deriv = prior.mirror_derivative(w, p)
    ds = deriv * step
    # exp/sinh overflow beyond e^30-fold moves, and Armijo's slope means little
    # for them; a KL code further from its optimum jumps there instead.
    # (L2's mirror is w itself: nothing overflows, and a warm start 1e3 away
    # would crawl there 30 at a time.)
    limited = ds.clamp(-_MAX_MIRROR_STEP, _MAX_MIRROR_STEP) if prior.exponential_mirror else ds
    # Judged without the jumps, whose chords could hide a limited step that
    # climbs, and against the whole step scaled down: a limit can leave a
    # step all but orthogonal to the gradient (a slope of -1.7e-7 where
    # Newton's was -0.64), whose curve then rises for every t that F
    # resolves (KL codes of weak priors, lam 1e-4, stopped 0.09 short).
    free = torch.ones_like(ds, dtype=torch.bool) if far is None else ~far
    slope = (g * torch.where(free, limited / deriv, 0.0)).sum(-1)
    newton_slope = (g * torch.where(free, step, 0.0)).sum(-1)
    kept = torch.where(free & (ds != 0), limited / torch.where(ds != 0, ds, 1), torch.ones_like(ds))
    scale = kept.amin(-1)
    uniform = ~(slope < 0) | (scale * newton_slope < slope)
    if bool(uniform.any()):
        limited = torch.where(uniform[:, None], ds * scale[:, None], limited)
        slope = torch.where(uniform, scale * newton_slope, slope)
    if far is None:
        return limited, slope, None
    if f is not None:
        far_step = torch.minimum(far_step, _jump_bound(prior, w, p, f, lam))
    # Jumps to a finite target, nothing to limit. Their tangent would
    # promise a decrease the saturating curve never delivers (e^-700 of
    # a code is its floor), so their slope counts the chord instead.
    limited = torch.where(far, far_step, limited)
    slope = slope + (g * torch.where(far, prior.mirror_curve(w, p, limited, 1.0) - w, 0.0)).sum(-1)
    rises = far & (limited > 0)
    return limited, slope, rises if bool(rises.any()) else None


def _rise(prior, w, p, ds, t, rises, cand):
    """The points at ``t`` of the curve whose rising jumps take the straight
    line ``w + t (target - w)``. Their chord slope is that line's, while
    along the mirror curve (convex in ``t``) a code ``e^60`` below its target
    is still ``e^30`` below at ``t = 1/2``, next to none of the chord: a
    row whose full jump overshoots (all of a start at 1e-30 jumping at once)
    then found no ``t`` Armijo accepts. Falling jumps keep the curve, which
    lies beyond their chord."""
    if rises is None:
        return cand
    target = prior.mirror_curve(w, p, ds, 1.0)
    return torch.where(rises, w + t[:, None] * (target - w), cand)


def offers_line(prior) -> bool:
    """Whether backtracking also tries the straight line (module docstring)."""
    return prior.name in ("signed_kl", "kl")


def _line(prior, w, tangent, t, cand, far):
    """The line's points ``w + t tangent``; KL's bent at ``w e^(-30 t)`` (positive,
    and the curve's own limit), and the curve's points ``cand`` where a code jumps."""
    line = w + t[:, None] * tangent
    if prior.has_floor:
        line = prior.project(torch.maximum(line, w * torch.exp(-_MAX_MIRROR_STEP * t[:, None])))
        if far is not None:
            line = torch.where(far, cand, line)
    return line


def _lower_of_line(problem, x, basis, lam, p, w, tangent, t, cand, f, far=None):
    """The curve's point ``cand`` (objective ``f``) or the line's (:func:`_line`), whichever has the lower ``F``."""
    line = _line(problem.prior, w, tangent, t, cand, far)
    f_line = problem.objective(x, basis, lam, p, line)
    better = f_line < f
    return torch.where(better[:, None], line, cand), torch.where(better, f_line, f)


def _damping(problem, x, basis, w, w_newton, grad_loss, r, mu, taken):
    """Marquardt's damping ``mu`` after a step whose Newton point (the
    solve's whole step, on the straight line) was ``w_newton``: up tenfold
    where the full step was not ``taken`` and the loss's change to
    ``w_newton`` strays from its quadratic model by more than the model's
    curvature term, else down tenfold (0 below 1e-6).

    Exponential losses (poisson, softmax, bernoulli) fit their quadratic
    model only within a few units of ``B w``: from codes far too large
    (λ = 1e-3, p = 10) the Newton step moved some of ``B w`` by 1e4, the
    line search cut every step to a hundredth, and codes crawled for
    hundreds of steps. Damping turns those steps toward the scaled gradient.
    The loss is judged on the straight line, not on the mirror curve: the
    prior's own nonlinearity is the curve's to handle (judged on the curve,
    weak signed-KL priors were damped for it, and took 16% more steps).
    """
    with torch.no_grad():
        dw = w_newton - w
        db = dw @ basis.T
        eta = w @ basis.T
        loss0 = problem.family.loss(x, eta)
        change = problem.family.loss(x, eta + db) - loss0
        curvature = 0.5 * (db * problem.family.curvature_apply(r, db)).sum(-1)
        slope = (grad_loss * dw).sum(-1)
        model = slope + curvature
        noise = FLAT_ULPS * torch.finfo(w.dtype).eps * (loss0.abs().clamp_min(1.0) + slope.abs())
        strays = ~((change - model).abs() <= curvature + noise)  # overflow (inf, nan) strays
        mu = torch.where(strays & ~taken, (10 * mu).clamp_min(1e-3), mu / 10)
        return torch.where(mu < 1e-6, 0.0, mu)


def newton(problem, x, basis, lam, p, w0, tol, max_iter):
    prior = problem.prior
    n = x.shape[0]
    w = w0
    iterations = torch.zeros(n, dtype=torch.int64, device=x.device)
    stuck = torch.zeros(n, dtype=torch.bool, device=x.device)
    damps = not problem.family.shared_gram  # a gaussian loss is its quadratic model
    mu = torch.zeros(n, dtype=x.dtype, device=x.device)
    grad_loss, r = problem.loss_gradient(x, basis, w)
    residual = problem.residual(x, basis, lam, p, w, grad_loss)

    for _ in range(max_iter):
        active = (residual > tol) & ~stuck
        if not bool(active.any()):
            break
        idx = active.nonzero().squeeze(1)
        xa, wa, ra = x[idx], w[idx], r[idx]
        g = grad_loss[idx] + lam * prior.grad(wa, p)

        far, far_step = _far(problem, basis, lam, p, wa, ra, grad_loss[idx])
        mu_a = mu[idx]
        step, ok = hessian_solve(problem, basis, lam, p, wa, ra, -g, fixed=far, direct=True,
                                 damping=mu_a if bool((mu_a > 0).any()) else None)
        # Where H was singular or the step is no descent direction (round-off),
        # fall back to the scaled gradient, which always descends.
        fallback = ~ok | ~((g * step).sum(-1) < 0)
        if bool(fallback.any()):
            d = prior.metric_scale(wa, p)
            descent = -d.square() * g if far is None else torch.where(far, 0.0, -d.square() * g)
            step = torch.where(fallback[:, None], descent, step)
        f0 = problem.objective(xa, basis, lam, p, wa)
        ds, slope, rises = _limit(prior, wa, p, g, step, far, far_step, f0, lam)
        tangent = None  # KL's line, bent, takes the whole Newton step
        if offers_line(prior):
            tangent = step if prior.has_floor else ds / prior.mirror_derivative(wa, p)
        g_norm = prior.optimality_gradient(wa, g).abs().amax(-1)
        t = torch.ones_like(f0)
        accepted = torch.zeros_like(f0, dtype=torch.bool)
        w_new = wa
        for trial in range(_MAX_BACKTRACK):
            cand = _rise(prior, wa, p, ds, t, rises, prior.mirror_curve(wa, p, ds, t[:, None]))
            f = problem.objective(xa, basis, lam, p, cand)
            if tangent is not None and trial > 1:
                cand, f = _lower_of_line(problem, xa, basis, lam, p, wa, tangent, t, cand, f, far)
            good = f - f0 <= _ARMIJO * t * slope  # refuses an unmoved F, however small t
            if trial == 0:
                gl_full, r_full = problem.loss_gradient(xa, basis, cand)
                g_c = prior.optimality_gradient(cand, gl_full + lam * prior.grad(cand, p)).abs().amax(-1)
                good = good | ((g_c <= 0.5 * g_norm) & flat(f, f0))
                full_step = good
            good = good & ~accepted
            w_new = torch.where(good[:, None], cand, w_new)
            accepted = accepted | good
            if bool(accepted.all()):
                break
            t = torch.where(accepted, t, t / 2)

        if damps:
            mu_a = _damping(problem, xa, basis, wa, wa + step, grad_loss[idx], ra, mu_a, full_step)
            mu = mu.index_copy(0, idx, mu_a)
        stuck = stuck.index_copy(0, idx, ~accepted)
        iterations = iterations.index_add(0, idx, torch.ones_like(idx))
        w = w.index_copy(0, idx, w_new)
        if bool(full_step.all()):  # the usual case: reuse the full step's gradient
            gl_a, r_a = gl_full, r_full
        else:
            gl_a, r_a = problem.loss_gradient(xa, basis, w_new)
        grad_loss = grad_loss.index_copy(0, idx, gl_a)
        r = r.index_copy(0, idx, r_a)
        residual = residual.index_copy(
            0, idx, problem.residual(xa, basis, lam, p, w_new, gl_a)
        )

    return SolveResult(w, iterations, residual, residual <= tol, "newton", tol)
