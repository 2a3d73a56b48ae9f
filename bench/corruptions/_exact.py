"""Arithmetic that gives the same bits on every CPU (and GPU): the engine's test sets are compared by checksum.

What differs between machines is not IEEE arithmetic but the order and the kind of operations that
libraries choose per instruction set: BLAS kernels (summation order, FMA), vectorised reductions
(lane counts), vectorised transcendental functions (SLEEF on AVX2/AVX-512, libm elsewhere) and
torch's float32 normal sampler (an AVX2-only path).  A float result near a uint8 rounding boundary
then lands on either side.  What does not differ: one IEEE ``+ - * /`` or ``sqrt`` per torch
operation, element by element; comparisons, ``floor``/``round``, gathers; integer arithmetic; and
any float64 sum whose every partial sum is exactly representable.  So the engine:

* applies linear operators in **fixed point** (:func:`on_grid`, :func:`check_exact`): operators
  and signals are rounded to multiples of ``2**-24`` with bounded magnitudes, so every product and
  every partial sum of a float64 GEMM is exact and any BLAS, any order, gives the same bits;
* averages through integers (:func:`exact_mean`);
* computes constants (filter taps, kernels, Poisson tables) in Python with a correctly rounded
  ``exp`` (:func:`exp`, the ``decimal`` module: software arithmetic, identical everywhere) and
  correctly rounded sums (``math.fsum``);
* draws normal numbers with its own Box-Muller (:func:`box_muller`), whose ``log`` and ``cos``
  (:func:`log_unit`, :func:`cos_turns`) are polynomials in ``+ - * /`` only, and Poisson numbers by
  inversion of exact tables (:func:`poisson`).

``tests/test_portable_testsets.py`` regenerates every built-in suite under other CPU code paths
(``ATEN_CPU_CAPABILITY``, ``MKL_CBWR``) and compares checksums.
"""

from __future__ import annotations

import decimal
import itertools
import math
from collections.abc import Sequence

import torch

__all__ = [
    "EXACT_LIMIT",
    "GRID",
    "box_muller",
    "check_exact",
    "cos_turns",
    "exact_mean",
    "exp",
    "log_unit",
    "on_grid",
    "poisson",
    "sin_cos_turns",
]

GRID = 2.0**24  # fixed-point operands are multiples of 1 / GRID
# |sum of products| below which every float64 partial sum of (1/GRID)-grid operands is exact:
# products lie on the 2**-48 grid, and 53 bits hold 2**5 of them; one bit of margin
EXACT_LIMIT = 2.0 ** (53 - 48 - 1)

_DECIMAL = decimal.Context(prec=40)


def on_grid(x: torch.Tensor) -> torch.Tensor:
    """``x`` as float64 rounded to the nearest multiple of ``1 / GRID`` (half to even)."""
    return torch.round(x.to(torch.float64) * GRID) / GRID


def check_exact(bound: float, what: str) -> None:
    """Raise if a fixed-point product sum bounded by ``bound`` could round (a programming error)."""
    if not bound < EXACT_LIMIT:
        raise ValueError(f"{what}: fixed-point bound {bound:g} >= {EXACT_LIMIT:g}; the result would not be exact")


def exact_mean(x: torch.Tensor, dims: Sequence[int]) -> torch.Tensor:
    """Mean over ``dims`` (kept), computed through integers: x is rounded to the ``2**-32`` grid,
    summed exactly as int64 and divided once, so the result does not depend on summation order."""
    scale = 2.0**32
    total = torch.round(x.to(torch.float64) * scale).to(torch.int64).sum(dim=tuple(dims), keepdim=True)
    count = math.prod(x.shape[d] for d in dims)
    return (total.to(torch.float64) / (count * scale)).to(x.dtype)


def exp(value: float) -> float:
    """Correctly rounded ``e**value`` (decimal arithmetic, then one rounding to float)."""
    return float(_DECIMAL.exp(decimal.Decimal(value)))


# ------------------------------------------------------------------ transcendental functions

_LN2_HI = 6.93147180369123816490e-01  # ln 2 split (fdlibm): the high part has 32 trailing zero bits
_LN2_LO = 1.90821492927058770002e-10
_SQRT_HALF = math.sqrt(0.5)
_ATANH_TERMS = [1.0 / (2 * k + 1) for k in range(12)]  # atanh(s) / s = sum s**(2k) / (2k + 1)
_COS_TERMS = [(-1.0) ** k / math.factorial(2 * k) for k in range(10)]
_SIN_TERMS = [(-1.0) ** k / math.factorial(2 * k + 1) for k in range(10)]


def _horner(z: torch.Tensor, coefficients: Sequence[float]) -> torch.Tensor:
    """sum c_k z**k, one multiply and one add per coefficient (never fused)."""
    out = torch.full_like(z, coefficients[-1])
    for c in reversed(coefficients[:-1]):
        out = out * z
        out = out + c
    return out


def log_unit(u: torch.Tensor) -> torch.Tensor:
    """Natural log of float64 ``u`` in (0, 1]: ``u = m 2**e`` with m in [sqrt(1/2), sqrt(2)), then
    ``e ln 2 + 2 atanh((m - 1) / (m + 1))`` by its series (|s| < 0.172: 12 terms, a few ulp)."""
    mantissa, exponent = torch.frexp(u)
    low = mantissa < _SQRT_HALF
    mantissa = torch.where(low, mantissa * 2.0, mantissa)
    e = (exponent - low.to(exponent.dtype)).to(torch.float64)
    f = mantissa - 1.0
    s = f / (f + 2.0)
    log_m = (s * 2.0) * _horner(s * s, _ATANH_TERMS)
    return e * _LN2_HI + (e * _LN2_LO + log_m)


def sin_cos_turns(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``sin(2 pi t)`` and ``cos(2 pi t)`` of float64 ``t`` (in turns, any sign).

    The reduction to the nearest quarter turn is exact (``4 t - round(4 t)``); the rest, at most an
    eighth of a turn, goes through Taylor polynomials (error below 1e-16)."""
    quarters = torch.round(t * 4.0)
    angle = (t * 4.0 - quarters) * (math.pi / 2)
    square = angle * angle
    sin_a = angle * _horner(square, _SIN_TERMS)
    cos_a = _horner(square, _COS_TERMS)
    quadrant = quarters.remainder(4.0)
    sin = torch.where(quadrant == 0, sin_a, torch.where(quadrant == 1, cos_a, torch.where(quadrant == 2, -sin_a, -cos_a)))
    cos = torch.where(quadrant == 0, cos_a, torch.where(quadrant == 1, -sin_a, torch.where(quadrant == 2, -cos_a, sin_a)))
    return sin, cos


def cos_turns(t: torch.Tensor) -> torch.Tensor:
    """``cos(2 pi t)``; see :func:`sin_cos_turns`."""
    return sin_cos_turns(t)[1]


CHUNK = 1 << 14  # elements per chunk of the element-wise chains below: their temporaries stay in cache


def box_muller(u1: torch.Tensor, u2: torch.Tensor) -> torch.Tensor:
    """Standard normal draws from two float64 uniforms on [0, 1): ``sqrt(-2 ln(1 - u1)) cos(2 pi u2)``.

    With 53-bit uniforms ``|z| <= sqrt(106 ln 2) < 8.6``.  Computed chunk by chunk (5x faster than
    whole-tensor temporaries on a large batch; the same bits)."""
    flat1, flat2 = u1.reshape(-1), u2.reshape(-1)
    out = torch.empty_like(flat1)
    for start in range(0, len(flat1), CHUNK):
        part = slice(start, start + CHUNK)
        out[part] = torch.sqrt(log_unit(1.0 - flat1[part]) * -2.0) * cos_turns(flat2[part])
    return out.reshape(u1.shape)


# ----------------------------------------------------------------------------------- Poisson


def _poisson_cdf(rate: float) -> list[float]:
    """Cumulative probabilities of Poisson(rate) at 0, 1, ... until the tail is below 2**-60."""
    if rate > 700.0:
        raise ValueError(f"shot noise supports Poisson rates up to 700 (photons per pixel), got {rate:g}")
    probability = exp(-rate)
    cdf, total, k = [], 0.0, 0
    while True:
        total += probability
        cdf.append(total)
        k += 1
        probability = probability * rate / k
        if k > rate and probability < 2.0**-60:
            return cdf


def poisson(rate: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Poisson(rate) counts by inversion: the smallest k with ``u < F(k)``; float64 result.

    The tables are built per distinct rate (an 8-bit image has at most 256) in Python floats, in a
    fixed order, so the counts are the same everywhere; the search is a vectorised bisection."""
    values, which = torch.unique(rate.detach().cpu().to(torch.float64), return_inverse=True)
    tables = [_poisson_cdf(float(v)) for v in values.tolist()]
    lengths = torch.tensor([len(t) for t in tables], dtype=torch.long)
    starts = torch.tensor([0, *itertools.accumulate(len(t) for t in tables[:-1])], dtype=torch.long)
    flat = torch.tensor([p for t in tables for p in t], dtype=torch.float64)
    u = uniforms.detach().cpu().to(torch.float64).reshape(-1)
    which = which.reshape(-1)
    counts = torch.empty_like(which)
    for begin in range(0, len(u), CHUNK):
        part = slice(begin, begin + CHUNK)
        counts[part] = _count_below(flat, starts[which[part]], lengths[which[part]], u[part])
    return counts.to(torch.float64).reshape(rate.shape).to(rate.device)


def _count_below(flat: torch.Tensor, start: torch.Tensor, length: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Per element, how many entries of its table ``flat[start : start + length]`` are <= u (bisection)."""
    low, high = torch.zeros_like(start), length.clone()
    while bool((low < high).any()):
        middle = (low + high) // 2
        below = flat[(start + middle).clamp(max=len(flat) - 1)] <= u
        active = low < high
        low = torch.where(active & below, middle + 1, low)
        high = torch.where(active & ~below, middle, high)
    return low
