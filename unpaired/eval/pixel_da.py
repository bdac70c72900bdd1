"""Pixel-level domain adaptation, for every method that translates: the classifier protocol.

Translate the labelled source training images (minus the held-out ones) into the target
domain with the trained model, train a fresh digit classifier (dtn_pretrain's f) on them
with the source labels, and report its accuracy on the real target test set. No target
label is used for training or selection; the classifier's step count is fixed in advance.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from unpaired.data.sets import EvalSet, batched, load_set
from unpaired.eval import run
from unpaired.methods.translation import TranslationRequest


def classifier_config(nf: int, channels: int, lr: float, batch_size: int,
                      seed: int = 0) -> ml_collections.ConfigDict:
    """A dtn_pretrain config for a 10-way digit classifier of width `nf` (feature_dim 2 nf)."""
    return ml_collections.ConfigDict(dict(
        method="dtn_pretrain", seed=seed, source_domain="X", target_domain="Y", input_nc=channels,
        output_nc=channels, nf=nf, feature_dim=2 * nf, num_classes=10, ngf=1, ndf=1, lr=lr,
        beta1=0.9, beta2=0.999, adam_eps=1e-8, batch_size=batch_size, dtype="float32",
        data=dict(crop_size=32)))  # the networks' input side (DTN's f is built for 32 or 64)


def train_classifier(images: np.ndarray, labels: np.ndarray, *, steps: int, nf: int = 64,
                     lr: float = 3e-4, batch_size: int = 64, seed: int = 0) -> tuple[Any, Any]:
    """(method, state): dtn_pretrain's f trained `steps` Adam steps on (images, labels).

    Batches are epochs of a permutation from `seed` (deterministic); images are 32x32.
    """
    from unpaired.methods.dtn import DTNPretrain  # pylint: disable=import-outside-toplevel

    if images.shape[1:3] != (32, 32):
        raise ValueError(f"the pixel-level DA classifier takes 32x32 images, got {images.shape[1:3]} "
                         "(config.data.crop_size must be 32)")
    config = classifier_config(nf, images.shape[-1], lr, batch_size, seed)
    method = DTNPretrain(config)
    state = method.create_state(jax.random.key(seed))
    step = jax.jit(method.train_step)
    rng = np.random.default_rng(seed)
    order = np.zeros((0,), np.int64)
    batch_size = min(batch_size, len(images))
    for _ in range(steps):
        if len(order) < batch_size:
            order = np.concatenate([order, rng.permutation(len(images))])
        idx, order = order[:batch_size], order[batch_size:]
        state, _ = step(state, {"X": jnp.asarray(images[idx]), "X_label": jnp.asarray(labels[idx])})
    return method, state


def pixel_da_accuracy(method: Any, state: Any, config: ml_collections.ConfigDict, source: str,
                      target: str, request: TranslationRequest, *, steps: int,
                      source_set: EvalSet | None = None, target_test: EvalSet | None = None,
                      seed: int = 0) -> float:
    """Accuracy on the real target test set of a classifier trained on translated source images."""
    e = config.eval
    spec = type(method).data_spec(config)
    if source_set is None:
        source_set = load_set(config.data, source, "train", spec.channels[source], True,
                              int(e.get("pixel_da_size", 0)))
    if target_test is None:
        target_test = load_set(config.data, target, "test", spec.channels[target], True,
                               int(e.get("test_size", 0)))
    data = run.EvalData({}, {}, {}, [], (), int(e.get("batch_size", 100)))
    fakes = run.translated(method, state, data, request, source_set.images)
    return trained_accuracy(fakes, source_set.labels, target_test, steps=steps, nf=int(e.pixel_da_nf),
                            lr=float(e.pixel_da_lr), batch_size=int(e.pixel_da_batch), seed=seed,
                            eval_batch_size=data.batch_size)


def trained_accuracy(images: np.ndarray, labels: np.ndarray, test: EvalSet, *, steps: int, nf: int,
                     lr: float, batch_size: int, seed: int = 0, eval_batch_size: int = 100) -> float:
    """Accuracy on `test` of a classifier trained (train_classifier) on (images, labels): the
    pixel-level DA score for translations, and its baselines for real images."""
    clf, clf_state = train_classifier(images, labels, steps=steps, nf=nf, lr=lr,
                                      batch_size=batch_size, seed=seed)
    predict = jax.jit(clf.classify)
    predicted = batched(lambda x: predict(clf_state.params, clf_state.model_state, x),
                        test.images, eval_batch_size)
    return run.accuracy(predicted, test.labels)


def pixel_da_metrics(method: Any, state: Any, config: ml_collections.ConfigDict,
                     eval_data: run.EvalData, steps: int) -> dict[str, float]:
    """`pixel_da_accuracy/<s>_to_<t>` for every direction the method translates."""
    out = {}
    for s, t, request in eval_data.directions:
        out[f"pixel_da_accuracy/{s}_to_{t}"] = pixel_da_accuracy(
            method, state, config, s, t, request, steps=steps, seed=int(config.get("seed", 0)))
    return out
