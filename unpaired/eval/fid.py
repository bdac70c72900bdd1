"""FID and KID over any feature extractor, computed on the host in float64.

`frechet_distance` is pytorch-fid's `calculate_frechet_distance` (scipy's sqrtm of
sigma1 @ sigma2; an eps offset on both diagonals when the root is not finite; a complex
root accepted only when its diagonal's imaginary part is below 1e-3, then its real part).
`kernel_inception_distance` is torch-fidelity's KID: the unbiased MMD^2 with the cubic
polynomial kernel (x.y / d + 1)^3 over `subsets` random subsets of `subset_size` rows each
(numpy RandomState(seed), torch-fidelity's default 2020), reported as mean and std.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any, Callable, Iterable

import numpy as np
from scipy import linalg

log = logging.getLogger(__name__)
FeatureFn = Callable[[Any], Any]


def _sqrtm(matrix: np.ndarray) -> np.ndarray:
    """scipy's principal square root, without its singular-matrix warning (handled by the caller)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        return linalg.sqrtm(matrix)


def frechet_distance(mu1: Any, sigma1: Any, mu2: Any, sigma2: Any, eps: float = 1e-6) -> float:
    """||mu1 - mu2||^2 + Tr(sigma1 + sigma2 - 2 sqrtm(sigma1 sigma2)), as pytorch-fid computes it.

    Raises ValueError when the shapes differ or the root has a large imaginary diagonal.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape:
        raise ValueError(f"mean vectors have different shapes {mu1.shape} and {mu2.shape}")
    if sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise ValueError(f"covariances {sigma1.shape} and {sigma2.shape} do not match the means "
                         f"{mu1.shape}")
    diff = mu1 - mu2
    covmean = _sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        log.warning("FID: sigma1 @ sigma2 is singular; adding %g to both diagonals", eps)
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = _sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"FID: sqrtm(sigma1 @ sigma2) has an imaginary component of "
                             f"{np.max(np.abs(covmean.imag)):g} (are the covariances PSD?)")
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def polynomial_kernel(x: np.ndarray, y: np.ndarray, degree: int = 3, gamma: float | None = None,
                      coef0: float = 1.0) -> np.ndarray:
    """(gamma x @ y.T + coef0) ** degree with gamma = 1 / d by default (KID's kernel)."""
    gamma = 1.0 / x.shape[1] if gamma is None else gamma
    return (x @ y.T * gamma + coef0) ** degree


def mmd2_unbiased(x: np.ndarray, y: np.ndarray, degree: int = 3, gamma: float | None = None,
                  coef0: float = 1.0) -> float:
    """The unbiased MMD^2 of two equal-size samples: off-diagonal k(x,x'), k(y,y') minus 2 mean k(x,y)."""
    m = x.shape[0]
    k_xx = polynomial_kernel(x, x, degree, gamma, coef0)
    k_yy = polynomial_kernel(y, y, degree, gamma, coef0)
    k_xy = polynomial_kernel(x, y, degree, gamma, coef0)
    off_diagonal = (k_xx.sum() - np.trace(k_xx)) + (k_yy.sum() - np.trace(k_yy))
    return float(off_diagonal / (m * (m - 1)) - 2 * k_xy.sum() / (m * m))


def kernel_inception_distance(feats1: Any, feats2: Any, subsets: int = 100, subset_size: int = 1000,
                              seed: int = 2020, degree: int = 3, gamma: float | None = None,
                              coef0: float = 1.0) -> dict[str, float]:
    """{'kid_mean', 'kid_std'}: unbiased MMD^2 over random subsets, as torch-fidelity draws them.

    Each subset takes `subset_size` rows of feats1, then of feats2, without replacement.
    """
    f1, f2 = np.asarray(feats1, np.float64), np.asarray(feats2, np.float64)
    if f1.ndim != 2 or f2.ndim != 2 or f1.shape[1] != f2.shape[1]:
        raise ValueError(f"KID needs two (n, d) feature arrays of the same d; got {f1.shape} and {f2.shape}")
    if subsets < 1 or not 2 <= subset_size <= min(len(f1), len(f2)):
        raise ValueError(f"KID subset_size={subset_size} must be in [2, {min(len(f1), len(f2))}] "
                         f"(the smaller sample) and subsets={subsets} >= 1")
    rng = np.random.RandomState(seed)
    mmds = np.zeros(subsets)
    for i in range(subsets):
        a = f1[rng.choice(len(f1), subset_size, replace=False)]
        b = f2[rng.choice(len(f2), subset_size, replace=False)]
        mmds[i] = mmd2_unbiased(a, b, degree, gamma, coef0)
    return {"kid_mean": float(np.mean(mmds)), "kid_std": float(np.std(mmds))}


def collect_features(feature_fn: FeatureFn, batches: Iterable[Any]) -> np.ndarray:
    """(n, d) float64 features of every batch (feature_fn(batch) -> (b, ...), flattened per row)."""
    rows = [np.asarray(feature_fn(batch), np.float64) for batch in batches]
    if not rows:
        raise ValueError("no batches to compute features of")
    return np.concatenate([r.reshape(r.shape[0], -1) for r in rows])


def statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, covariance) of (n, d) features, float64, unbiased (np.cov, as pytorch-fid)."""
    features = np.asarray(features, np.float64)
    if features.shape[0] < 2:
        raise ValueError(f"FID statistics need at least 2 feature rows, got {features.shape[0]}")
    return np.mean(features, axis=0), np.cov(features, rowvar=False)


def feature_statistics(feature_fn: FeatureFn, batches: Iterable[Any]) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) of feature_fn over all batches: what pytorch-fid saves as a .npz."""
    return statistics(collect_features(feature_fn, batches))


def fid_between(feature_fn: FeatureFn, images_a_batches: Iterable[Any], images_b_batches: Iterable[Any],
                kid_subsets: int = 100, kid_subset_size: int = 1000, seed: int = 2020) -> dict[str, Any]:
    """{'fid', 'kid_mean', 'kid_std', 'kid_subset_size', 'images_a', 'images_b'} of two image sets.

    KID's subset size is capped at the smaller set (recorded in the result).
    """
    fa = collect_features(feature_fn, images_a_batches)
    fb = collect_features(feature_fn, images_b_batches)
    fid = frechet_distance(*statistics(fa), *statistics(fb))
    size = min(kid_subset_size, len(fa), len(fb))
    kid = kernel_inception_distance(fa, fb, kid_subsets, size, seed)
    return {"fid": fid, **kid, "kid_subset_size": size, "images_a": len(fa), "images_b": len(fb)}
