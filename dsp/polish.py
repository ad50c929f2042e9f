"""Integer polish of a biquad: the integer coefficients whose response is closest to a target.

A biquad quantised for the firmware, ``(b0 + b1/z + b2/z**2) / (S + a1/z +
a2/z**2)`` with integers b, a and the fixed scale S = 2**shift, must match a
target power response on a grid of angles.  Rounding the float fit to
integers is not good enough for two reasons: the rounding error is not the
smallest error the integers can reach, and a float that ends near half a
unit rounds one way on one CPU and the other way on another (the float fit
differs between CPUs and BLAS kernels in its last digits, about 1e-8
relative).  A local search from the rounded fit does not cure the second:
the cost has long flat valleys (a pole pair and a zero pair that nearly
cancel move together; at 48 kHz the cost curves 3 million times less in
one direction than in the steepest), in which the search would stop
wherever it first finds no better neighbour (measured: from the 243 starts
within one unit of the rounded fit, a search over the 5**5 neighbours
ended on two to four different sets at 48, 44.1 and 16 kHz).

`nearest` returns the integer minimiser of the cost itself, which does not
depend on where the search starts (the tests start it up to 25 units away):

1. a Newton model of the cost around the current integer centre (exact
   gradient and Hessian, damped by a multiple of diag(J^T J) where it is not
   convex) proposes each unit step and the lattice point nearest to the
   model's minimum, or to 1/2, 1/4, ... of the way there (Babai's nearest
   plane in an LLL-reduced basis of the model's metric, in which the flat
   valley is a few short steps); the centre moves to the cheapest while one
   is cheaper;
2. then every integer set in growing ellipsoids of that metric around the
   centre is evaluated (Fincke-Pohst enumeration), up to the ellipsoid that
   holds every set the model puts below the centre's cost, widened by a
   margin for sets where the model is above the true cost (checked on the
   sets evaluated, and doubled while exceeded).  A cheaper set becomes the
   centre and step 1 starts again; else the centre is the answer.

The cost is a sum over the grid of squared relative power errors, computed
from exact integers with IEEE operations in a fixed order and summed with
`math.fsum` (exactly rounded), so on every machine it differs at most in the
last bits of the per-angle constants; equal costs go to the smallest
coefficient tuple.  The models, the basis and the ellipsoid only decide how
fast the minimiser is found, never which one it is.
"""

from __future__ import annotations

import math
from typing import Final, NamedTuple

import numpy as np
import numpy.typing as npt

__all__ = ["Target", "cost", "nearest", "stable"]

FloatArray = npt.NDArray[np.float64]
Point = tuple[int, ...]
Vector = list[float]
Matrix = list[list[float]]

# A search step may evaluate at most this many coefficient sets.
MAX_POINTS: Final = 200_000
# Largest factor by which the ellipsoid's margin may grow before giving up.
_MAX_MARGIN: Final = 2.0**20
_LLL_DELTA: Final = 0.99
# Newton steps tried per centre: the full step and its halves down to 1/2**(n-1).
_MAX_HALVINGS: Final = 8


class Target(NamedTuple):
    """The grid: |B/A|**2 at angle w, times `fixed`, should equal `power`; a0 = `scale`."""

    cos1: FloatArray  # cos w
    sin1: FloatArray  # sin w
    cos2: FloatArray  # cos 2w
    sin2: FloatArray  # sin 2w
    fixed: FloatArray  # power gain of the sections around the biquad
    power: FloatArray  # the target power response
    scale: int  # 2**shift, the integer a0


def _parts(t: Target, q: FloatArray) -> tuple[FloatArray, ...]:
    b0, b1, b2, a1, a2 = (q[:, j : j + 1] for j in range(5))
    br = b0 + b1 * t.cos1 + b2 * t.cos2
    bi = b1 * t.sin1 + b2 * t.sin2
    ar = t.scale + a1 * t.cos1 + a2 * t.cos2
    ai = a1 * t.sin1 + a2 * t.sin2
    num = br * br + bi * bi
    den = ar * ar + ai * ai
    err = t.fixed * num / den / t.power - 1.0
    return br, bi, ar, ai, num, den, err


def cost(t: Target, rows: list[Point]) -> list[float]:
    """Sum of squared relative power errors over the grid, per coefficient set."""
    if not rows:
        return []
    err = _parts(t, np.array(rows, dtype=np.float64))[-1]
    # fsum is exactly rounded: the sum does not depend on the order of additions
    return [math.fsum(row) for row in (err * err).tolist()]


def stable(t: Target, p: Point) -> bool:
    """Poles inside the unit circle (Jury's triangle, exact in integers).

    z**2 + u z + v has both roots strictly inside the unit circle iff
    |v| < 1 and |u| < 1 + v; scaled by a0 they need no division.
    """
    return abs(p[4]) < t.scale and abs(p[3]) < t.scale + p[4]


class _Model(NamedTuple):
    """Cost ~ c0 + 2 g.x + x.H.x around an integer centre."""

    centre: Point
    c0: float
    grad: Vector  # half the gradient
    hess: Matrix  # half the Hessian
    gauss: Vector  # the diagonal of J^T J, the scale of a damping term

    def at(self, p: Point) -> float:
        x = [float(a - b) for a, b in zip(p, self.centre, strict=True)]
        n = len(x)
        quad = sum(x[i] * self.hess[i][j] * x[j] for i in range(n) for j in range(n))
        return self.c0 + 2.0 * sum(g * v for g, v in zip(self.grad, x, strict=True)) + quad

    def minimum(self) -> tuple[Vector, float]:
        """The model's minimiser (absolute coordinates) and its value."""
        step = _solve(self.hess, [-g for g in self.grad])
        low = self.c0 + sum(g * s for g, s in zip(self.grad, step, strict=True))
        return [c + s for c, s in zip(self.centre, step, strict=True)], low

    def convex(self) -> _Model:
        """This model, or one damped by a multiple of diag(J^T J) until it is convex."""
        lam = 0.0
        while True:
            hess = [
                [h + (lam * self.gauss[i] if i == j else 0.0) for j, h in enumerate(row)]
                for i, row in enumerate(self.hess)
            ]
            try:
                _cholesky(hess)
            except ArithmeticError:
                lam = 2.0 * lam if lam else 1e-9
                continue
            return self._replace(hess=hess)


class _Lattice(NamedTuple):
    """Z^n under a positive definite form H, in an LLL-reduced basis."""

    basis: list[list[int]]
    gram: Matrix  # H in the reduced basis
    cols: Matrix  # the basis vectors as the columns of a matrix

    @classmethod
    def of(cls, hess: Matrix) -> _Lattice:
        basis = _lll(hess)
        n = len(hess)
        return cls(basis, _gram(basis, hess), [[float(b[i]) for b in basis] for i in range(n)])

    def within(self, aim: Vector, reach: float) -> list[Point]:
        """Integer x with (x - aim)^T H (x - aim) <= reach; with reach < 0 the nearest one."""
        n = len(aim)
        ys = _ellipsoid(self.gram, _solve(self.cols, aim), reach)
        return [tuple(sum(y[k] * self.basis[k][i] for k in range(n)) for i in range(n)) for y in ys]


def _model(t: Target, centre: Point, c0: float) -> _Model:
    """Newton model of the cost at `centre`: exact gradient and Hessian.

    The Hessian keeps the residual-weighted second derivatives: where a zero
    sits on the unit circle (44.1 kHz: at Nyquist), moving it off the circle
    changes the response only in second order, and J^T J alone is singular.
    """
    br, bi, ar, ai, num, den, err = _parts(t, np.array([centre], dtype=np.float64))
    br, bi, ar, ai, num, den, err = (v.ravel() for v in (br, bi, ar, ai, num, den, err))
    e1 = err + 1.0
    u = t.fixed / t.power
    cs = [(np.ones_like(br), np.zeros_like(br)), (t.cos1, t.sin1), (t.cos2, t.sin2)]
    # derivatives of |B|**2 by b0..b2 and of |A|**2 by a1, a2 (first and second)
    dn = [2.0 * (br * c + bi * s) for c, s in cs]
    dd = [2.0 * (ar * c + ai * s) for c, s in cs[1:]]

    def cross(k: int, m: int) -> FloatArray:
        return np.asarray(2.0 * (cs[k][0] * cs[m][0] + cs[k][1] * cs[m][1]), dtype=np.float64)

    jac = [u * d / den for d in dn] + [-e1 * d / den for d in dd]
    second: list[list[FloatArray]] = [[np.zeros_like(br)] * 5 for _ in range(5)]
    for k in range(3):
        for m in range(3):
            second[k][m] = u * cross(k, m) / den
        for m in range(2):
            second[k][3 + m] = second[3 + m][k] = -u * dn[k] * dd[m] / (den * den)
    for m in range(2):
        for n in range(2):
            second[3 + m][3 + n] = (
                2.0 * e1 * dd[m] * dd[n] / (den * den) - e1 * cross(1 + m, 1 + n) / den
            )
    r = err.tolist()
    cols = [j.tolist() for j in jac]
    grad = [math.fsum(a * b for a, b in zip(c, r, strict=True)) for c in cols]
    hess = [
        [
            math.fsum(a * b for a, b in zip(cols[k], cols[m], strict=True))
            + math.fsum(a * b for a, b in zip(second[k][m].tolist(), r, strict=True))
            for m in range(5)
        ]
        for k in range(5)
    ]
    gauss = [math.fsum(a * a for a in c) for c in cols]
    return _Model(centre, c0, grad, hess, gauss)


def nearest(t: Target, start: Point) -> Point:
    """The stable integer coefficients of least `cost`, searched from `start` (module doc)."""
    known: dict[Point, float] = {}

    def cost_of(rows: list[Point]) -> list[float]:
        new = [r for r in dict.fromkeys(rows) if r not in known]
        known.update(zip(new, cost(t, new), strict=True))
        return [known[r] for r in rows]

    def cheaper(rows: list[Point]) -> Point | None:
        cost_of(rows)
        best = min(((known[r], r) for r in rows if stable(t, r)), default=None)
        return best[1] if best is not None and best < (known[centre], centre) else None

    centre = tuple(start)
    if not stable(t, centre):
        raise ArithmeticError(f"the biquad {centre!r} (a0 = {t.scale}) is not stable")
    n = len(centre)
    margin = 1.0
    while True:
        c0 = cost_of([centre])[0]
        # the magnitude is smooth across the stability boundary, so the model
        # may reach beyond it; only the choice must be stable
        model = _model(t, centre, c0).convex()
        lattice = _Lattice.of(model.hess)
        xstar, low = model.minimum()
        # step 1: a unit step, or the lattice point nearest the model's
        # minimum, or nearest a half, a quarter... of the way there
        steps = [
            tuple(c + d * (i == j) for j, c in enumerate(centre)) for i in range(n) for d in (-1, 1)
        ]
        for k in range(_MAX_HALVINGS):
            aim = [c + 0.5**k * (x - c) for c, x in zip(centre, xstar, strict=True)]
            steps += lattice.within(aim, -1.0)
        better = cheaper(steps)
        if better is not None:
            centre = better
            continue
        # step 2: every integer set around the centre, in growing ellipsoids
        # of the model's metric, up to one that holds all sets the model (with
        # the margin for its error) puts below the centre's cost
        gap = abs(c0 - low) + 1e-12 * abs(c0)
        reach = gap * (1.0 + math.sqrt(1.0 + margin)) ** 2
        size = reach / 4.0**_MAX_HALVINGS
        rows: list[Point] = []
        while better is None and size < reach:
            size = min(4.0 * size, reach)
            rows = lattice.within([float(c) for c in centre], size)
            better = cheaper(rows)
        if better is not None:
            centre = better
            continue
        # only a model above the true cost can hide a cheaper set outside
        got = cost_of(rows)
        err = max((model.at(r) - c for r, c in zip(rows, got, strict=True)), default=0.0)
        if err <= gap * margin:
            return centre
        if margin > _MAX_MARGIN:
            raise ArithmeticError(
                f"the cost near the biquad {centre!r} is far from its model; "
                "the fit it polishes must change"
            )
        margin *= 2.0


def _solve(m: Matrix, v: Vector) -> Vector:
    """x with m x = v (Gauss-Jordan with partial pivoting; m is small and regular)."""
    n = len(m)
    a = [[*row, b] for row, b in zip(m, v, strict=True)]
    for c in range(n):
        p = max(range(c, n), key=lambda r: abs(a[r][c]))
        a[c], a[p] = a[p], a[c]
        if a[c][c] == 0.0:
            raise ArithmeticError("the polish model is singular; the fit it polishes must change")
        for r in range(n):
            if r != c and a[r][c] != 0.0:
                f = a[r][c] / a[c][c]
                a[r] = [x - f * y for x, y in zip(a[r], a[c], strict=True)]
    return [a[i][n] / a[i][i] for i in range(n)]


def _cholesky(m: Matrix) -> Matrix:
    """Lower L with L L^T = m."""
    n = len(m)
    el = [[0.0] * n for _ in range(n)]
    for i in range(n):
        for j in range(i + 1):
            s = m[i][j] - sum(el[i][k] * el[j][k] for k in range(j))
            if i == j:
                if s <= 0.0:
                    raise ArithmeticError(
                        "the polish model is not positive definite; the fit it polishes must change"
                    )
                el[i][i] = math.sqrt(s)
            else:
                el[i][j] = s / el[j][j]
    return el


def _gram(basis: list[list[int]], m: Matrix) -> Matrix:
    """The form m in the basis: entry (k, l) is basis[k]^T m basis[l]."""
    n = len(m)
    return [
        [sum(u[i] * m[i][j] * v[j] for i in range(n) for j in range(n)) for v in basis]
        for u in basis
    ]


def _lll(m: Matrix) -> list[list[int]]:
    """An LLL-reduced integer basis of Z^n under the quadratic form m (delta 0.99)."""
    n = len(m)
    basis = [[int(i == j) for j in range(n)] for i in range(n)]
    k = 1
    while k < n:
        g = _gram(basis, m)
        mu = [[0.0] * n for _ in range(n)]
        norm = [0.0] * n
        for i in range(n):
            for j in range(i):
                s = g[i][j] - sum(mu[j][t] * mu[i][t] * norm[t] for t in range(j))
                mu[i][j] = s / norm[j]
            norm[i] = g[i][i] - sum(mu[i][j] ** 2 * norm[j] for j in range(i))
        for j in reversed(range(k)):
            q = round(mu[k][j])
            if q:
                basis[k] = [a - q * b for a, b in zip(basis[k], basis[j], strict=True)]
                for t in range(j):
                    mu[k][t] -= q * mu[j][t]
                mu[k][j] -= q
        if norm[k] >= (_LLL_DELTA - mu[k][k - 1] ** 2) * norm[k - 1]:
            k += 1
        else:
            basis[k], basis[k - 1] = basis[k - 1], basis[k]
            k = max(k - 1, 1)
    return basis


def _ellipsoid(m: Matrix, centre: Vector, reach: float) -> list[Point]:
    """Every integer y with (y - centre)^T m (y - centre) <= reach (Fincke-Pohst).

    With m = L L^T the excess is the sum over i of (L^T (y - centre))_i**2,
    and term i only involves coordinates i and above: the last coordinate is
    bounded first and each choice narrows the range of the next.  With
    `reach` < 0 it returns the nearest-plane point alone (each coordinate
    rounded to the middle of its range).
    """
    el = _cholesky(m)
    n = len(centre)
    out: list[Point] = []
    y = [0] * n

    def walk(i: int, budget: float) -> None:
        s = sum(el[j][i] * (y[j] - centre[j]) for j in range(i + 1, n))
        mid = centre[i] - s / el[i][i]
        if budget < 0.0:
            choices = [round(mid)]
        else:
            half = math.sqrt(budget) / el[i][i]
            choices = list(range(math.ceil(mid - half), math.floor(mid + half) + 1))
        for v in choices:
            y[i] = v
            left = budget - (el[i][i] * (v - mid)) ** 2 if budget >= 0.0 else budget
            if i > 0:
                walk(i - 1, left)
                continue
            out.append(tuple(y))
            if len(out) > MAX_POINTS:
                raise ArithmeticError(
                    f"the integer search holds more than {MAX_POINTS} coefficient sets; "
                    "the fit it polishes is too flat"
                )

    walk(n - 1, reach)
    return out
