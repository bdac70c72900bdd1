"""The collapse measure (`unpaired.eval.diversity`) against a brute-force loop and its limits."""

import itertools

import numpy as np
import pytest

from unpaired.eval import diversity


def _brute(images):
    x = np.asarray(images, np.float64).reshape(len(images), -1)
    return np.mean([np.sqrt(np.mean((x[i] - x[j]) ** 2)) for i, j in itertools.combinations(range(len(x)), 2)])


def test_mean_pairwise_rms_equals_a_loop_over_pairs():
    x = np.random.default_rng(0).uniform(-1, 1, (9, 4, 4, 3)).astype(np.float32)
    np.testing.assert_allclose(diversity.mean_pairwise_rms(x), _brute(x), rtol=1e-10)
    np.testing.assert_allclose(diversity.mean_pairwise_rms(x, limit=5), _brute(x[:5]), rtol=1e-10)


def test_collapse_scores_zero_identity_one_and_scaling_scales():
    x = np.random.default_rng(1).uniform(-1, 1, (12, 8, 8, 1))
    assert diversity.diversity_ratio(x, np.repeat(x[:1] * 0.3, 12, axis=0)) == pytest.approx(0.0, abs=1e-6)
    assert diversity.diversity_ratio(x, x) == pytest.approx(1.0)
    assert diversity.diversity_ratio(x, 0.5 * x + 0.2) == pytest.approx(0.5)
    # Outputs may have other channels than the inputs (grey -> RGB): only the distances count.
    assert diversity.diversity_ratio(x, np.repeat(x, 3, axis=-1)) == pytest.approx(1.0)


def test_bad_sets_are_refused_with_the_reason():
    x = np.zeros((4, 2, 2, 1))
    with pytest.raises(ValueError, match="identical"):
        diversity.diversity_ratio(x, x)
    with pytest.raises(ValueError, match="3 inputs but 4 outputs"):
        diversity.diversity_ratio(x[:3], x)
    with pytest.raises(ValueError, match="at least 2"):
        diversity.mean_pairwise_rms(x[:1])


def test_class_templates_collapse_within_classes_while_the_global_ratio_stays_high():
    """Every input of a class mapped to its class's one template (DTN's translations, DT3):
    the global ratio sees the classes differ, the within-class ratio sees the collapse."""
    rng = np.random.default_rng(2)
    labels = np.repeat(np.arange(4), 6)
    x = rng.uniform(-1, 1, (24, 8, 8, 1))
    templates = rng.uniform(-1, 1, (4, 8, 8, 1))
    out = templates[labels]
    assert diversity.diversity_ratio(x, out) > 0.5
    assert diversity.within_class_ratio(x, out, labels) == pytest.approx(0.0, abs=1e-6)
    assert diversity.within_class_ratio(x, x, labels) == pytest.approx(1.0)
    halved = np.where(labels[:, None, None, None] < 2, 0.5 * x, x)  # two classes at half spread
    assert diversity.within_class_ratio(x, halved, labels) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="24 inputs, 24 outputs, 23 labels"):
        diversity.within_class_ratio(x, x, labels[:-1])
    with pytest.raises(ValueError, match="no class has 2 images"):
        diversity.within_class_ratio(x[:4], x[:4], np.arange(4))
