"""What a method can report, computed on fixed sets: the one evaluation seam for every method.

`evaluate(method, state, config, eval_data)` finds what the method supports from its
optional hooks, never from its name:

* `translate` with a target-domain classifier (config.eval.classifiers):
  `translation_accuracy/<s>_to_<t>` on s's test set (the DTN protocol: classify G(x) with
  t's classifier, score against x's labels), and `translation_accuracy_holdout/<s>_to_<t>`
  on s's held-out training images (config.data.holdout > 0);
* `translate` with t's classifier and t's test set: `classifier_kid/<s>_to_<t>` and, when
  both sets have more images than the classifier has features (else the covariances are
  singular), `classifier_fid/<s>_to_<t>`: FID/KID of G(s test) against real t test images
  in the classifier's penultimate features (`unpaired.eval.fid`; comparable only between
  runs scored with the same classifier);
* `translate` both ways: `cycle_l1/<s>_to_<t>`, mean |x - G_ts(G_st(x))| on s's test set;
* `translate` on s's test set: `diversity/<s>_to_<t>`, the collapse measure
  (`unpaired.eval.diversity`: the translations' mean pairwise distance over the inputs'; 0
  when every input gives the same image) and, when s's test set is labelled,
  `diversity_within_class/<s>_to_<t>` (the same inside each class: 0 when every input of a
  class gives one image);
* `digit_accuracy(params, model_state, images, labels, domain)` (a classifier on the shared
  latent, UFDN's/UNIT's domain adaptation; `domain` names the images' domain, for UNIT's
  per-domain first D layers): `da_accuracy/<t>` on each unlabelled domain's test set and
  `da_accuracy_holdout/<s>` on the labelled (source) domain's held-out images.

A direction s -> t exists when `method.resolve_request(TranslationRequest(target=t))`
accepts it (two-domain methods: A<->B; UFDN: every pair; DTN: source -> target only).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from unpaired.data.sets import EvalSet, batched, load_set
from unpaired.eval import config as eval_config
from unpaired.eval import diversity
from unpaired.eval.classifier import Classifier, load_classifier
from unpaired.methods.translation import TranslationRequest

log = logging.getLogger(__name__)


@dataclasses.dataclass
class EvalData:
    """The fixed sets and classifiers one run is evaluated with (loaded once)."""

    test: dict[str, EvalSet]
    holdout: dict[str, EvalSet]
    classifiers: dict[str, Classifier]
    directions: list[tuple[str, str, TranslationRequest]]
    labelled: tuple[str, ...]  # the method's labelled (source) domains
    batch_size: int
    _jitted: dict[Any, Any] = dataclasses.field(default_factory=dict)


def directions(method: Any, domains: tuple[str, ...]) -> list[tuple[str, str, TranslationRequest]]:
    """(source, target, resolved request) for every ordered domain pair the method translates."""
    if not hasattr(method, "translate") or not hasattr(method, "resolve_request"):
        return []
    out = []
    for s in domains:
        for t in domains:
            if s == t:
                continue
            try:
                out.append((s, t, method.resolve_request(TranslationRequest(target=t))))
            except ValueError:
                continue  # a direction this method does not serve (e.g. DTN's target -> source)
    return out


def load_eval_data(method: Any, config: ml_collections.ConfigDict,
                   classifiers: Mapping[str, Classifier] | None = None) -> EvalData:
    """Everything `evaluate` needs, from config.eval, config.data and the method's data spec."""
    spec = type(method).data_spec(config)
    e = config.get("eval", eval_config.eval_config())
    if classifiers is None:
        classifiers = {d: load_classifier(p) for d, p in eval_config.parse_classifiers(
            e.get("classifiers", "")).items()}
    pairs = directions(method, spec.domains)
    has_da = hasattr(method, "digit_accuracy")
    labelled = tuple(spec.labels)
    # Which domains need labels: translation sources scored by a target classifier, and DA.
    need_labels = {s for s, t, _ in pairs if t in classifiers}
    if has_da:
        need_labels |= set(spec.domains)
    test_needed = {s for s, _, _ in pairs} | (set(spec.domains) - set(labelled) if has_da else set())
    limit = int(e.get("test_size", 0))
    test = {d: load_set(config.data, d, "test", spec.channels[d], d in need_labels, limit)
            for d in spec.domains if d in test_needed}
    holdout = {}
    if int(config.data.get("holdout", 0)) > 0:
        hold_domains = ({s for s, t, _ in pairs if t in classifiers}
                        | (set(labelled) if has_da else set()))
        holdout = {d: load_set(config.data, d, "holdout", spec.channels[d], True)
                   for d in spec.domains if d in hold_domains}
    return EvalData(test, holdout, dict(classifiers), pairs, labelled, int(e.get("batch_size", 100)))


def _translator(method: Any, eval_data: EvalData, request: TranslationRequest) -> Any:
    key = ("translate", request)
    if key not in eval_data._jitted:
        eval_data._jitted[key] = jax.jit(lambda p, ms, x: method.translate(p, x, request, ms))
    return eval_data._jitted[key]


def translated(method: Any, state: Any, eval_data: EvalData, request: TranslationRequest,
               images: np.ndarray) -> np.ndarray:
    """G(images) for `request` in eval mode, batched, as a host array."""
    fn = _translator(method, eval_data, request)
    return batched(lambda x: fn(state.params, state.model_state, x), images, eval_data.batch_size)


def classifier_input(images: np.ndarray, classifier: Classifier) -> np.ndarray:
    """Images with the channels the classifier was trained on (grey <-> RGB by mean / repeat)."""
    want = getattr(getattr(classifier.method, "config", None), "input_nc", images.shape[-1])
    if images.shape[-1] == want:
        return images
    if want == 1:
        return images.mean(axis=-1, keepdims=True)
    return np.repeat(images[..., :1], want, axis=-1)


def accuracy(predicted: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of predictions equal to the labels."""
    predicted, labels = np.asarray(predicted), np.asarray(labels)
    if predicted.shape != labels.shape or not len(labels):
        raise ValueError(f"accuracy needs equal, non-empty shapes: {predicted.shape} vs {labels.shape}")
    return float(np.mean(predicted == labels))


def classified_accuracy(fake: np.ndarray, labels: np.ndarray, classifier: Classifier,
                        batch_size: int) -> float:
    """The DTN protocol on translated images: classify `fake` with the target classifier."""
    return accuracy(batched(classifier.predict, classifier_input(fake, classifier), batch_size), labels)


def translation_accuracy(method: Any, state: Any, eval_data: EvalData, request: TranslationRequest,
                         images: np.ndarray, labels: np.ndarray, classifier: Classifier) -> float:
    """The DTN protocol: classify G(images) with the target classifier, score against `labels`."""
    fake = translated(method, state, eval_data, request, images)
    return classified_accuracy(fake, labels, classifier, eval_data.batch_size)


def classifier_distances(eval_data: EvalData, fake: np.ndarray, real: np.ndarray,
                         classifier: Classifier) -> dict[str, float]:
    """{'kid'[, 'fid']} of the translated images `fake` against `real` in the classifier's features."""
    from unpaired.eval import fid  # pylint: disable=import-outside-toplevel

    key = ("features", id(classifier))
    if key not in eval_data._jitted:
        eval_data._jitted[key] = jax.jit(classifier.method.features)
    fn = eval_data._jitted[key]
    feats = lambda x: batched(lambda b: fn(classifier.state.params, classifier.state.model_state, b),
                              classifier_input(x, classifier), eval_data.batch_size)
    fa = feats(fake).astype(np.float64)
    fb = feats(real).astype(np.float64)
    size = min(len(fa), len(fb), 1000)
    out = {"kid": fid.kernel_inception_distance(fa, fb, 100, size)["kid_mean"]}
    if min(len(fa), len(fb)) > fa.shape[1]:
        out["fid"] = fid.frechet_distance(*fid.statistics(fa), *fid.statistics(fb))
    return out


def digit_accuracy(method: Any, state: Any, eval_data: EvalData, eval_set: EvalSet, domain: str) -> float:
    """The method's own `digit_accuracy` over a whole set of `domain` (padding labelled -1, never counted)."""
    key = ("digit_accuracy", domain)
    if key not in eval_data._jitted:
        eval_data._jitted[key] = jax.jit(
            lambda p, ms, x, y: method.digit_accuracy(p, ms, x, y, domain=domain) * x.shape[0])
    fn, b = eval_data._jitted[key], eval_data.batch_size
    correct = 0.0
    for start in range(0, len(eval_set.images), b):
        x, y = eval_set.images[start:start + b], eval_set.labels[start:start + b]
        if len(x) < b:
            x = np.concatenate([x, np.repeat(x[-1:], b - len(x), axis=0)])
            y = np.concatenate([y, np.full(b - len(y), -1, np.int32)])
        correct += float(fn(state.params, state.model_state, jnp.asarray(x), jnp.asarray(y)))
    return correct / len(eval_set.images)


def evaluate(method: Any, state: Any, config: ml_collections.ConfigDict, eval_data: EvalData
             ) -> dict[str, float]:
    """Every metric the method supports on the fixed sets, as {name: value} (no 'eval/' prefix)."""
    del config  # everything was resolved into eval_data; kept for a stable signature
    out: dict[str, float] = {}
    requests = {(s, t): r for s, t, r in eval_data.directions}
    for (s, t), request in requests.items():
        clf = eval_data.classifiers.get(t)
        back = requests.get((t, s))
        # G(s test) once per direction: its accuracy, distances and cycle all read it.
        there = None
        if s in eval_data.test:
            there = translated(method, state, eval_data, request, eval_data.test[s].images)
            if len(there) >= 2:
                out[f"diversity/{s}_to_{t}"] = diversity.diversity_ratio(eval_data.test[s].images, there)
            labels = eval_data.test[s].labels
            if labels is not None and np.max(np.unique(labels[:diversity.WITHIN_CLASS_IMAGES],
                                                       return_counts=True)[1], initial=0) >= 2:
                out[f"diversity_within_class/{s}_to_{t}"] = diversity.within_class_ratio(
                    eval_data.test[s].images, there, labels)
        if clf is not None and there is not None:
            out[f"translation_accuracy/{s}_to_{t}"] = classified_accuracy(
                there, eval_data.test[s].labels, clf, eval_data.batch_size)
        if clf is not None and s in eval_data.holdout:
            hs = eval_data.holdout[s]
            out[f"translation_accuracy_holdout/{s}_to_{t}"] = translation_accuracy(
                method, state, eval_data, request, hs.images, hs.labels, clf)
        if (clf is not None and there is not None and t in eval_data.test
                and hasattr(clf.method, "features")):
            distances = classifier_distances(eval_data, there, eval_data.test[t].images, clf)
            out.update({f"classifier_{k}/{s}_to_{t}": v for k, v in distances.items()})
        if back is not None and there is not None:
            again = translated(method, state, eval_data, back, there)
            out[f"cycle_l1/{s}_to_{t}"] = float(np.mean(np.abs(again - eval_data.test[s].images)))
    if hasattr(method, "digit_accuracy"):
        for d, ts in eval_data.test.items():
            if d not in eval_data.labelled and ts.labels is not None:
                out[f"da_accuracy/{d}"] = digit_accuracy(method, state, eval_data, ts, d)
        for d in eval_data.labelled:
            if d in eval_data.holdout:
                out[f"da_accuracy_holdout/{d}"] = digit_accuracy(method, state, eval_data,
                                                                 eval_data.holdout[d], d)
    return out


def selection_value(metrics: Mapping[str, float], select: str) -> tuple[str, float] | None:
    """(what, value to maximise) for model selection, or None when nothing selects.

    'auto': the mean source held-out accuracy (da_accuracy_holdout/*, else
    translation_accuracy_holdout/*); never a test-set metric. A metric name selects on it
    (cycle_l1/* is minimised, so its value is negated).
    """
    if select == eval_config.SELECT_NONE:
        return None
    if select == eval_config.SELECT_AUTO:
        for prefix in ("da_accuracy_holdout/", "translation_accuracy_holdout/"):
            keys = sorted(k for k in metrics if k.startswith(prefix))
            if keys:
                return f"mean({prefix}*)", float(np.mean([metrics[k] for k in keys]))
        return None
    if select not in metrics:
        raise ValueError(f"config.eval.select={select!r} is not a metric of this run; it reports "
                         f"{', '.join(sorted(metrics)) or 'nothing'}")
    sign = -1.0 if select.startswith("cycle_l1/") else 1.0
    return select, sign * float(metrics[select])
