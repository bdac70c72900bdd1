"""A collapse measure: are distinct inputs translated to distinct outputs?

`diversity_ratio(inputs, outputs)` is the mean pairwise RMS distance between the
translations of a set divided by the same mean over the inputs. A generator that maps
every input to one image scores 0; one that moves images apart as much as they were
scores about 1. It needs no classifier and no labels, so every method and dataset gets it
(issue 23: UNIT DA's translations were one grey blob while its losses looked normal).
"""

from __future__ import annotations

import numpy as np

MAX_IMAGES = 256  # pairs grow as n^2: 256 images are 32,640 pairs, plenty for a mean


def mean_pairwise_rms(images: np.ndarray, limit: int = MAX_IMAGES) -> float:
    """Mean over pairs i < j of the RMS pixel difference of the first `limit` images."""
    x = np.asarray(images, np.float64)[:limit].reshape(min(len(images), limit), -1)
    if len(x) < 2:
        raise ValueError(f"mean_pairwise_rms needs at least 2 images, got {len(x)}")
    sq = np.sum(x * x, axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * x @ x.T, 0.0) / x.shape[1]
    upper = np.triu_indices(len(x), k=1)
    return float(np.mean(np.sqrt(d2[upper])))


def diversity_ratio(inputs: np.ndarray, outputs: np.ndarray, limit: int = MAX_IMAGES) -> float:
    """mean_pairwise_rms(outputs) / mean_pairwise_rms(inputs): 0 when every output is the same."""
    if len(inputs) != len(outputs):
        raise ValueError(f"diversity_ratio: {len(inputs)} inputs but {len(outputs)} outputs")
    spread = mean_pairwise_rms(inputs, limit)
    if spread == 0.0:
        raise ValueError("diversity_ratio: the inputs are all identical, so no ratio exists")
    return mean_pairwise_rms(outputs, limit) / spread
