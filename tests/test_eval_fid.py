"""FID and KID against independent float64 computations (NumPy eigendecompositions, SciPy's
sqrtm as pytorch-fid calls it, an element-by-element MMD), plus the error cases."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import linalg

from unpaired.eval import fid


def random_covariance(rng, d, n=None):
    """A well-conditioned PSD covariance (or the sample covariance of n < d rows: singular)."""
    x = rng.normal(size=(n or 4 * d, d)) * rng.uniform(0.2, 2.0, size=d)
    return np.cov(x, rowvar=False)


def fid_by_eigenvalues(mu1, s1, mu2, s2):
    """Tr sqrtm(S1 S2) = sum sqrt(eig(S1^1/2 S2 S1^1/2)): symmetric eigenproblems only."""
    w, v = np.linalg.eigh(s1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    inner = np.linalg.eigvalsh(root1 @ s2 @ root1)
    diff = mu1 - mu2
    return diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.sum(np.sqrt(np.clip(inner, 0, None)))


def test_frechet_distance_matches_the_eigenvalue_form_and_scipy():
    rng = np.random.default_rng(0)
    d = 24
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = random_covariance(rng, d), random_covariance(rng, d)
    ours = fid.frechet_distance(mu1, s1, mu2, s2)
    assert ours == pytest.approx(fid_by_eigenvalues(mu1, s1, mu2, s2), rel=1e-10)
    scipy_root = linalg.sqrtm(s1 @ s2).real
    direct = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * scipy_root)
    assert ours == pytest.approx(direct, rel=1e-12)
    # float32 inputs are computed in float64 all the same.
    as32 = fid.frechet_distance(*(np.float32(a) for a in (mu1, s1, mu2, s2)))
    assert as32 == pytest.approx(fid_by_eigenvalues(*(np.float64(np.float32(a)) for a in (mu1, s1, mu2, s2))),
                                 rel=1e-9)


def test_frechet_distance_closed_forms():
    rng = np.random.default_rng(1)
    a, b = rng.uniform(0.1, 3, 8), rng.uniform(0.1, 3, 8)
    mu1, mu2 = rng.normal(size=8), rng.normal(size=8)
    # Commuting (diagonal) covariances: |mu1 - mu2|^2 + sum (sqrt a - sqrt b)^2.
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert fid.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-12)
    s = random_covariance(rng, 8)
    assert abs(fid.frechet_distance(mu1, s, mu1, s)) < 1e-10 * np.trace(s)
    # Scalars (d = 1) as pytorch-fid's atleast_1d/2d allow.
    assert fid.frechet_distance(0.0, 4.0, 3.0, 1.0) == pytest.approx(9.0 + 1.0, rel=1e-12)


def test_frechet_distance_of_singular_sample_covariances_is_finite_and_close():
    rng = np.random.default_rng(2)
    d = 32
    s1, s2 = random_covariance(rng, d, n=10), random_covariance(rng, d, n=12)  # rank 9, 11
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    ours = fid.frechet_distance(mu1, s1, mu2, s2)
    assert np.isfinite(ours)
    # sqrtm of a singular product is accurate to about sqrt(machine eps) of its scale.
    assert ours == pytest.approx(fid_by_eigenvalues(mu1, s1, mu2, s2), rel=1e-5)


def test_frechet_distance_rejects_bad_inputs():
    eye = np.eye(3)
    with pytest.raises(ValueError, match="imaginary component"):
        fid.frechet_distance(np.zeros(3), eye, np.zeros(3), -eye)  # not PSD: an imaginary root
    with pytest.raises(ValueError, match="different shapes"):
        fid.frechet_distance(np.zeros(3), eye, np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="do not match"):
        fid.frechet_distance(np.zeros(3), eye, np.zeros(3), np.eye(4))


def mmd2_by_loops(x, y):
    """The unbiased MMD^2 written element by element with k(a, b) = (a.b / d + 1)^3."""
    m, d = x.shape
    k = lambda a, b: (float(np.dot(a, b)) / d + 1.0) ** 3
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def test_kid_of_one_full_subset_is_the_unbiased_mmd():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(20, 6)), rng.normal(0.5, 1.2, size=(20, 6))
    out = fid.kernel_inception_distance(x, y, subsets=1, subset_size=20)
    assert out["kid_mean"] == pytest.approx(mmd2_by_loops(x, y), rel=1e-12)
    assert out["kid_std"] == 0.0
    assert out["kid_mean"] > 0.01  # the shift is detected


def test_kid_subsets_are_drawn_as_torch_fidelity_draws_them():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(30, 5)), rng.normal(0.3, 1.0, size=(25, 5))
    out = fid.kernel_inception_distance(np.float32(x), np.float32(y), subsets=4, subset_size=10, seed=7)
    draws = np.random.RandomState(7)
    values = []
    for _ in range(4):
        a = np.float64(np.float32(x))[draws.choice(30, 10, replace=False)]
        b = np.float64(np.float32(y))[draws.choice(25, 10, replace=False)]
        values.append(mmd2_by_loops(a, b))
    assert out["kid_mean"] == pytest.approx(np.mean(values), rel=1e-10)
    assert out["kid_std"] == pytest.approx(np.std(values), rel=1e-8)
    with pytest.raises(ValueError, match="subset_size=26"):
        fid.kernel_inception_distance(x, y, subsets=1, subset_size=26)
    with pytest.raises(ValueError, match="same d"):
        fid.kernel_inception_distance(x, y[:, :4], subsets=1, subset_size=5)


def test_feature_statistics_over_batches_of_a_jitted_extractor():
    rng = np.random.default_rng(5)
    images = rng.normal(size=(37, 4, 4, 2)).astype(np.float32)
    weights = rng.normal(size=(32, 6)).astype(np.float32)
    feature_fn = jax.jit(lambda x: jnp.tanh(x.reshape(x.shape[0], -1) @ weights))
    batches = [images[i:i + 8] for i in range(0, 37, 8)]  # a ragged last batch
    mu, sigma = fid.feature_statistics(feature_fn, batches)
    feats = np.float64(np.tanh(images.reshape(37, -1).astype(np.float64) @ weights))
    centred = feats - feats.mean(0)
    np.testing.assert_allclose(mu, feats.mean(0), atol=1e-6)
    np.testing.assert_allclose(sigma, centred.T @ centred / 36, atol=1e-6)
    assert mu.dtype == sigma.dtype == np.float64 and sigma.shape == (6, 6)
    with pytest.raises(ValueError, match="no batches"):
        fid.feature_statistics(feature_fn, [])


def test_fid_between_two_sets_shifted_by_a_constant():
    rng = np.random.default_rng(6)
    a = rng.normal(size=(200, 5))
    shift = np.array([0.5, -1.0, 0.0, 2.0, 0.25])
    identity = lambda x: x
    out = fid.fid_between(identity, [a[:100], a[100:]], [a + shift], kid_subsets=3, kid_subset_size=1000)
    # Same covariance, means apart by `shift`: FID is |shift|^2 exactly.
    assert out["fid"] == pytest.approx(float(shift @ shift), rel=1e-9)
    assert out["images_a"] == out["images_b"] == 200 and out["kid_subset_size"] == 200
    assert out["kid_mean"] > 0
