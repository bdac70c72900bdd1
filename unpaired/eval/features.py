"""Feature extractors for FID/KID: the digit classifier's penultimate layer, offline.

A classifier run (`configs/classifier.py`, method dtn_pretrain) gives the digit experiments
a FID that needs no Inception weights: FID/KID over f's features (`DTNPretrain.features`),
in eval mode. Numbers are comparable only between runs using the same classifier.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterable

import jax

from unpaired.eval import fid

Array = jax.Array


def classifier_feature_fn(workdir: str | os.PathLike, step: int | None = None) -> Callable[[Array], Array]:
    """A jitted images -> (B, feature_dim) of the classifier run in `workdir` (its newest checkpoint).

    Raises ValueError when the run is not a classifier (its method has no `features`).
    """
    from unpaired import translate  # pylint: disable=import-outside-toplevel

    method, state, config = translate.load_workdir_state(workdir, step)
    if not hasattr(method, "features"):
        raise ValueError(f"{os.fspath(workdir)!r} is a {config.method} run; expected a digit classifier "
                         "(configs/classifier.py, method dtn_pretrain)")
    apply = jax.jit(method.features)
    return lambda images: apply(state.params, state.model_state, images)


def classifier_fid(workdir: str | os.PathLike, images_a_batches: Iterable[Any],
                   images_b_batches: Iterable[Any], **kid: Any) -> dict[str, Any]:
    """`fid.fid_between` over the features of the classifier run in `workdir` (kid: subsets, size, seed)."""
    return fid.fid_between(classifier_feature_fn(workdir), images_a_batches, images_b_batches, **kid)
