"""Full-batch L-BFGS with a weak-Wolfe bracketing line search, a TF port of hjmshi's PyTorch-LBFGS.

The projection of the paper (spec D.3) uses ``FullBatchLBFGS(lr=1, history_size=10,
line_search='Wolfe')`` with ``max_ls=10`` from https://github.com/hjmshi/PyTorch-LBFGS. This is
the same algorithm, step for step:

* two-loop recursion with ``H_diag`` = 1 at first, then ``y's / y'y`` of the newest pair;
* curvature pairs ``s = t d``, ``y = g_new - g_old`` accepted only if ``y's > eps s'Bs`` with
  ``Bs = -t g_old`` (``eps = 1e-2``, no Powell damping by default); none after a failed search;
* weak Wolfe line search from ``t = lr``: Armijo ``F(x + t d) <= F + c1 t g'd`` (c1 1e-4) and
  curvature ``g(x + t d)'d >= c2 g'd`` (c2 0.9); bracketing with extrapolation by ``eta = 2``
  and cubic interpolation (:func:`polyinterp`, minFunc's) with the same safeguards; after
  ``max_ls`` trials the step is reverted (``t = 0``) and the search counts as failed.

With ``damping=True`` (off in the reference's projection) Powell damping replaces ``y`` by
``theta y + (1 - theta) Bs`` when ``y's < eps s'Bs``; as in the reference, ``H_diag`` is then the
*undamped* ``y's`` over the damped ``y'y``.

Differences, none of which change the iterates: the closure returns the loss *and* the flat
gradient together (TF has no deferred ``backward``; the gradient is wasted only at trial points
that fail Armijo), and the state lives in this object instead of ``optimizer.state``. Python-float
scalars (step sizes, ``H_diag``) enter tensor arithmetic through :meth:`FullBatchLBFGS._scalar`,
in the variables' dtype, so float64 runs use the exact float64 steps as the reference does
(``tf.cast`` of a Python float would round it to float32 first).

Usage, as the reference's loop::

    opt = FullBatchLBFGS(variables)
    loss, grad = opt.closure_eval(closure)       # one initial closure + backward
    for _ in range(steps):
        result = opt.step(closure, loss, grad)   # StepResult(loss, grad, t, ...)
        loss, grad = result.loss, result.grad

``closure()`` must return ``(loss, [grad per variable])`` at the variables' current values.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, List, Sequence

import numpy as np
import tensorflow as tf


def polyinterp(points, x_min_bound=None, x_max_bound=None):
    """Minimiser of the polynomial interpolating rows ``[x, f, g]`` (NaN = unknown), minFunc style.

    Two points with all four values: the closed-form cubic; two points with three values: the
    quadratic; otherwise a linear solve over the critical points. Falls back to bisection of the
    bounds when no valid critical point exists. A port of hjmshi's ``polyinterp``.
    """
    points = np.asarray(points, np.float64)
    no_points = points.shape[0]
    order = int(np.sum(1 - np.isnan(points[:, 1:3]).astype(int))) - 1
    x_min, x_max = np.min(points[:, 0]), np.max(points[:, 0])
    x_min_bound = x_min if x_min_bound is None else x_min_bound
    x_max_bound = x_max if x_max_bound is None else x_max_bound

    if no_points == 2 and order == 2:
        if points[0, 0] == 0:
            x_sol = -points[0, 2] * points[1, 0] ** 2 / (
                2 * (points[1, 1] - points[0, 1] - points[0, 2] * points[1, 0]))
        else:
            a = -(points[0, 1] - points[1, 1] - points[0, 2] * (points[0, 0] - points[1, 0])) / (
                points[0, 0] - points[1, 0]) ** 2
            x_sol = points[0, 0] - points[0, 2] / (2 * a)
        x_sol = np.minimum(np.maximum(x_min_bound, x_sol), x_max_bound)
    elif no_points == 2 and order == 3:
        d1 = points[0, 2] + points[1, 2] - 3 * ((points[0, 1] - points[1, 1]) / (points[0, 0] - points[1, 0]))
        disc = d1 ** 2 - points[0, 2] * points[1, 2]
        if disc >= 0:  # np.sqrt of a negative real gives NaN, which the reference's isreal() accepts (then clamps)
            d2 = math.sqrt(disc)
            x_sol = points[1, 0] - (points[1, 0] - points[0, 0]) * (
                (points[1, 2] + d2 - d1) / (points[1, 2] - points[0, 2] + 2 * d2))
            x_sol = np.minimum(np.maximum(x_min_bound, x_sol), x_max_bound)
        else:
            # The reference computes NaN here; np.minimum/np.maximum propagate it and the caller's
            # safeguards then clip it to a bound. Bisection is the documented intent.
            x_sol = (x_max_bound + x_min_bound) / 2
    else:
        rows, rhs = [], []
        for i in range(no_points):
            if not np.isnan(points[i, 1]):
                rows.append([points[i, 0] ** j for j in range(order, -1, -1)])
                rhs.append(points[i, 1])
        for i in range(no_points):
            if not np.isnan(points[i, 2]):
                rows.append([(order - j) * points[i, 0] ** (order - j - 1) for j in range(order)] + [0.0])
                rhs.append(points[i, 2])
        a_mat, b = np.asarray(rows, np.float64).reshape(-1, order + 1), np.asarray(rhs, np.float64)
        x_sol = (x_min_bound + x_max_bound) / 2
        if a_mat.shape[0] == a_mat.shape[1] and np.linalg.matrix_rank(a_mat) == a_mat.shape[0]:
            coeff = np.linalg.solve(a_mat, b)
            dcoeff = np.array([coeff[i] * (order - i) for i in range(len(coeff) - 1)])
            crit = [x_min_bound, x_max_bound, *points[:, 0]]
            if not np.isinf(dcoeff).any():
                crit += list(np.roots(dcoeff))
            f_min = np.inf
            for c in crit:
                if np.isreal(c) and x_min_bound <= np.real(c) <= x_max_bound:
                    f_c = np.polyval(coeff, np.real(c))
                    if np.isreal(f_c) and f_c < f_min:
                        x_sol, f_min = np.real(c), np.real(f_c)
    return float(x_sol)


@dataclasses.dataclass
class StepResult:
    """What one :meth:`FullBatchLBFGS.step` did (the reference's Wolfe return tuple)."""
    loss: float
    grad: List[tf.Tensor]
    t: float
    ls_steps: int
    closure_evals: int
    desc_dir: bool
    fail: bool


class FullBatchLBFGS:
    """Deterministic L-BFGS over a list of ``tf.Variable`` (see the module docstring).

    Args:
      variables: the variables to optimise (any shapes; one flat vector internally).
      lr: initial step length of every line search (1 in the reference).
      history_size: number of curvature pairs kept (10).
      line_search: ``"Wolfe"`` (the reference's choice), ``"Armijo"`` (backtracking) or ``"None"``.
    """

    def __init__(self, variables: Sequence[tf.Variable], lr: float = 1.0, history_size: int = 10,
                 line_search: str = "Wolfe"):
        if lr < 0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if history_size < 0:
            raise ValueError(f"Invalid history size: {history_size}")
        if line_search not in ("Wolfe", "Armijo", "None"):
            raise ValueError(f"line_search must be 'Wolfe', 'Armijo' or 'None', got {line_search!r}")
        self.variables = list(variables)
        self.lr, self.history_size, self.line_search = float(lr), int(history_size), line_search
        self.dtype = self.variables[0].dtype
        self._shapes = [v.shape for v in self.variables]
        self._sizes = [int(np.prod(s)) for s in self._shapes]
        self.n_iter = 0
        self.curv_skips = 0
        self.fail_skips = 0
        self.h_diag = 1.0
        self.fail = True
        self.old_dirs: List[tf.Tensor] = []  # s
        self.old_stps: List[tf.Tensor] = []  # y
        self._d = self._t = self._prev_flat_grad = self._bs = None

    # -- flat-vector helpers ----------------------------------------------------------------
    def flatten(self, tensors) -> tf.Tensor:
        return tf.concat([tf.reshape(tf.cast(t, self.dtype), [-1]) for t in tensors], axis=0)

    def _scalar(self, x: float) -> tf.Tensor:
        """A Python float as a tensor of the variables' dtype, exactly (no float32 detour)."""
        return tf.constant(x, self.dtype)

    def _add_update(self, step, direction):
        if step == 0:
            return
        parts = tf.split(direction * self._scalar(step), self._sizes)
        for v, p, shape in zip(self.variables, parts, self._shapes):
            v.assign_add(tf.reshape(p, shape))

    @staticmethod
    def _dot(a, b) -> float:
        return float(tf.reduce_sum(a * b))

    def closure_eval(self, closure: Callable):
        """Evaluates ``closure`` -> (loss as float, flat gradient)."""
        loss, grads = closure()
        grads = [tf.zeros(s, self.dtype) if g is None else g for g, s in zip(grads, self._shapes)]
        return float(loss), self.flatten(grads)

    # -- the algorithm -------------------------------------------------------------------------
    def two_loop_recursion(self, vec: tf.Tensor) -> tf.Tensor:
        """``H vec`` with the limited-memory inverse Hessian approximation."""
        num_old = len(self.old_dirs)
        rho = [1.0 / self._dot(self.old_stps[i], self.old_dirs[i]) for i in range(num_old)]
        alpha = [0.0] * num_old
        q = vec
        for i in range(num_old - 1, -1, -1):
            alpha[i] = self._dot(self.old_dirs[i], q) * rho[i]
            q = q - alpha[i] * self.old_stps[i]
        r = q * self._scalar(self.h_diag)
        for i in range(num_old):
            beta = self._dot(self.old_stps[i], r) * rho[i]
            r = r + (alpha[i] - beta) * self.old_dirs[i]
        return r

    def curvature_update(self, flat_grad: tf.Tensor, eps: float = 1e-2, damping: bool = False):
        """Adds the pair of the last step if the line search succeeded and ``y's > eps s'Bs``."""
        if eps <= 0:
            raise ValueError("Invalid eps; must be positive.")
        if self.fail:
            self.fail_skips += 1
            return
        y = flat_grad - self._prev_flat_grad
        s = self._d * self._scalar(self._t)
        sbs = self._dot(s, self._bs)
        ys = self._dot(y, s)
        if ys > eps * sbs or damping:
            if damping and ys < eps * sbs:
                theta = ((1 - eps) * sbs) / (sbs - ys)
                y = self._scalar(theta) * y + self._scalar(1 - theta) * self._bs  # ys stays undamped
            if len(self.old_dirs) == self.history_size:
                self.old_dirs.pop(0)
                self.old_stps.pop(0)
            if self.history_size > 0:
                self.old_dirs.append(s)
                self.old_stps.append(y)
            self.h_diag = ys / self._dot(y, y)
        else:
            self.curv_skips += 1

    def step(self, closure: Callable, current_loss: float, grad: tf.Tensor, eps: float = 1e-2,
             damping: bool = False, max_ls: int = 10, c1: float = 1e-4, c2: float = 0.9, eta: float = 2.0,
             interpolate: bool = True) -> StepResult:
        """One L-BFGS iteration from the current point, whose loss and flat gradient are given.

        Returns the new loss and flat gradient (for the next call) with the line-search record.
        """
        if not 0 < c1 < 1:
            raise ValueError("Invalid c1; must be strictly between 0 and 1.")
        if not c1 < c2 < 1:
            raise ValueError("Invalid c2; must be in (c1, 1).")
        if max_ls <= 0:
            raise ValueError("Invalid max_ls; must be positive.")
        if self.n_iter > 0:
            self.curvature_update(grad, eps, damping)
        d = self.two_loop_recursion(-grad)
        self.n_iter += 1
        self._prev_flat_grad = grad
        f_k = float(current_loss)
        gtd = self._dot(grad, d)
        desc_dir = gtd < 0
        t = self.lr
        closure_evals = 0

        if self.line_search == "Wolfe":
            f_new, g_new, t, ls_step, closure_evals, fail = self._wolfe(
                closure, d, f_k, gtd, t, max_ls, c1, c2, eta, interpolate)
        elif self.line_search == "Armijo":
            f_new, g_new, t, ls_step, closure_evals, fail = self._armijo(
                closure, d, f_k, gtd, t, max_ls, c1, eta, interpolate)
        else:
            self._add_update(t, d)
            f_new, g_new = self.closure_eval(closure)
            closure_evals, ls_step, fail = 1, 0, False
        self._bs = grad * self._scalar(-t)
        self._d, self._t, self.fail = d, t, fail
        return StepResult(f_new, g_new, t, ls_step, closure_evals, desc_dir, fail)

    def _wolfe(self, closure, d, f_k, gtd, t, max_ls, c1, c2, eta, interpolate):
        ls_step, closure_evals, t_prev = 0, 0, 0.0
        alpha, beta, fail = 0.0, math.inf, False
        f_a, g_a, f_b, g_b = f_k, gtd, math.nan, math.nan
        self._add_update(t, d)
        f_new, g_new = self.closure_eval(closure)
        closure_evals += 1
        while True:
            if ls_step >= max_ls:
                self._add_update(-t, d)
                t = 0.0
                f_new, g_new = self.closure_eval(closure)
                closure_evals += 1
                fail = True
                break
            if f_new > f_k + c1 * t * gtd or not math.isfinite(f_new):
                # Armijo fails (a NaN loss compares False in the reference, then fails Wolfe's
                # curvature test; treating it as "too far" is the safe reading).
                beta, t_prev = t, t
                if interpolate:
                    f_b, g_b = f_new, math.nan
            else:
                gtd_new = self._dot(g_new, d)
                if gtd_new < c2 * gtd:
                    alpha, t_prev = t, t
                    if interpolate:
                        f_a, g_a = f_new, gtd_new
                else:
                    break
            if not interpolate or not math.isfinite(f_b):
                t = eta * t if beta == math.inf else (alpha + beta) / 2.0
            else:
                t = polyinterp(np.array([[alpha, f_a, g_a], [beta, f_b, g_b]]))
                if beta == math.inf:
                    if t > 2 * eta * t_prev:
                        t = 2 * eta * t_prev
                    elif t < eta * t_prev:
                        t = eta * t_prev
                else:
                    if t < alpha + 0.2 * (beta - alpha):
                        t = alpha + 0.2 * (beta - alpha)
                    elif t > (beta - alpha) / 2.0:
                        t = (beta - alpha) / 2.0
                if t <= 0:
                    t = (beta - alpha) / 2.0
            self._add_update(t - t_prev, d)
            f_new, g_new = self.closure_eval(closure)
            closure_evals += 1
            ls_step += 1
        return f_new, g_new, t, ls_step, closure_evals, fail

    def _armijo(self, closure, d, f_k, gtd, t, max_ls, c1, eta, interpolate):
        ls_step, closure_evals, t_prev, f_prev, fail = 0, 0, 0.0, math.nan, False
        self._add_update(t, d)
        f_new, g_new = self.closure_eval(closure)
        closure_evals += 1
        while f_new > f_k + c1 * t * gtd or not math.isfinite(f_new):
            if ls_step >= max_ls:
                self._add_update(-t, d)
                t = 0.0
                f_new, g_new = self.closure_eval(closure)
                closure_evals += 1
                fail = True
                break
            t_new = t
            if ls_step == 0 or not interpolate or not math.isfinite(f_new):
                t = t / eta
            elif ls_step == 1 or not math.isfinite(f_prev):
                t = polyinterp(np.array([[0, f_k, gtd], [t_new, f_new, np.nan]]))
            else:
                t = polyinterp(np.array([[0, f_k, gtd], [t_new, f_new, np.nan], [t_prev, f_prev, np.nan]]))
            if t < 1e-3 * t_new:
                t = 1e-3 * t_new
            elif t > 0.6 * t_new:
                t = 0.6 * t_new
            if interpolate:
                f_prev, t_prev = f_new, t_new
            self._add_update(t - t_new, d)
            f_new, g_new = self.closure_eval(closure)
            closure_evals += 1
            ls_step += 1
        return f_new, g_new, t, ls_step, closure_evals, fail
