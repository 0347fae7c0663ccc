"""Private helpers of the constructions: parameter checks and random matrices in the theory's convention."""

from __future__ import annotations

import numbers

import numpy as np

from repgeo._validation import check_float, check_int  # noqa: F401 (the theorem modules import them from here)

# ---------------------------------------------------------------------------------------------------- checks


def rng_from(seed: object) -> np.random.Generator:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an integer; got {seed!r}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0; got {seed}")
    return np.random.default_rng(int(seed))


# ------------------------------------------------------------------------------------------ random matrices


def orthogonal(k: int, rng: np.random.Generator) -> np.ndarray:
    """A Haar-random k x k orthogonal matrix."""
    Q, R = np.linalg.qr(rng.standard_normal((k, k)))
    return Q * np.sign(np.diag(R))


def orthonormal_rows(r: int, p: int, rng: np.random.Generator) -> np.ndarray:
    """A random r x p matrix with orthonormal rows (r <= p)."""
    Q, _ = np.linalg.qr(rng.standard_normal((p, r)))
    return Q.T


def centred_orthonormal(n: int, r: int, rng: np.random.Generator) -> np.ndarray:
    """A random n x r matrix with orthonormal, centred columns (needs r <= n - 1)."""
    Z = rng.standard_normal((n, r))
    Z -= Z.mean(axis=0)
    Q, _ = np.linalg.qr(Z)
    Q -= Q.mean(axis=0)  # remove the rounding-level mean QR leaves
    return Q


def standardise(A: np.ndarray) -> np.ndarray:
    """The theory's convention: centre the columns, divide by the Frobenius norm."""
    A = np.asarray(A, dtype=np.float64)
    A = A - A.mean(axis=0)
    return A / np.linalg.norm(A)


def gram(A: np.ndarray) -> np.ndarray:
    return A @ A.T
