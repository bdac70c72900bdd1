"""DTN (Taigman, Polyak, Wolf 2017) in two registered stages over the TrainState seams.

* `dtn_pretrain` (stage 1): f as a 10-way classifier on the labelled source domain,
  mean softmax cross-entropy, Adam; its test accuracy is printed and written to
  `<workdir>/accuracy.json` when the run ends.
* `dtn` (stage 2): G = g o f with f frozen (taken from stage 1 via config.init_from:
  `required_init` is ('f',)), the paper's objective: a ternary D (fake-from-source 0,
  fake-from-target 1, real target 2) and
  L_G = L_GANG + alpha L_CONST + beta L_TID + gamma L_TV (MSE distances; TV anisotropic
  with B = 1 on the (H-1)x(W-1) pixels that have a right and a lower neighbour).

Two methods, not one with a `config.stage`: the stages have different networks,
optimizer groups, data (stage 1 reads labels, stage 2 two domains) and init rules,
and the seams ask exactly these of a method. Facts: `shared/reference/dtn.md`.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import optax

from unpaired import losses
from unpaired.config_validation import ConfigError, check_at_least, check_present
from unpaired.data.spec import DataSpec
from unpaired.methods.cyclegan import _Runner
from unpaired.methods.translation import TranslationRequest
from unpaired.nets import dtn as nets
from unpaired.state import TrainState, apply_group_update

Array = jax.Array
log = logging.getLogger(__name__)
NETWORK_KEYS = ("nf", "feature_dim", "num_classes", "ngf", "ndf", "input_nc", "output_nc")


def _adam(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """torch.optim.Adam(lr, (beta1, beta2), adam_eps) at a constant rate (the reference's)."""
    return optax.inject_hyperparams(optax.adam)(
        learning_rate=config.lr, b1=config.beta1, b2=config.beta2, eps=config.adam_eps)


def _validate_common(config: ml_collections.ConfigDict) -> None:
    """Keys both stages share: widths, channels, domains, Adam, 32x32 images."""
    check_present(config, NETWORK_KEYS + ("source_domain", "target_domain", "lr", "beta1",
                                          "beta2", "adam_eps"))
    for key in NETWORK_KEYS:
        check_at_least(config, key, 1)
    for key in ("input_nc", "output_nc"):
        if config[key] not in (1, 3):
            raise ConfigError(f"config.{key}={config[key]!r} must be 1 or 3")
    if config.source_domain == config.target_domain:
        raise ConfigError(f"config.target_domain={config.target_domain!r} must differ from "
                          "config.source_domain")
    if not config.lr > 0:
        raise ConfigError(f"config.lr={config.lr!r} must be > 0")
    for key in ("beta1", "beta2"):
        if not 0 <= config[key] < 1:
            raise ConfigError(f"config.{key}={config[key]!r} must be in [0, 1)")
    if not config.adam_eps > 0:
        raise ConfigError(f"config.adam_eps={config.adam_eps!r} must be > 0")
    if config.data.crop_size != 32:
        raise ConfigError(f"config.data.crop_size={config.data.crop_size} must be 32: DTN's f "
                          "and g are the reference's 32x32 networks")


def import_tf_networks(method: Any, path: str, names: tuple[str, ...]) -> dict[str, Any]:
    """{name: variables} of f, g or D from a TF checkpoint (`dtn-<step>`, `svhn_model-<step>`).

    Read by variable name without TensorFlow (`unpaired.weights.read_tf_checkpoint`);
    TF kernels are our layout already. f's `out` head is optional (dtn-* lack it).
    """
    from unpaired.weights import BundleError, list_tf_checkpoint, read_tf_checkpoint  # pylint: disable=import-outside-toplevel

    unknown = [n for n in names if n not in method.networks]
    if unknown or not names:
        raise ValueError(f"config.init_networks must name some of {', '.join(method.networks)} "
                         f"for a TF checkpoint (got {','.join(names) or 'nothing'})")
    try:
        present = list_tf_checkpoint(path)
        wanted = [v for v in present if v.split("/")[0] in {nets.SCOPES[n] for n in names}]
        arrays = read_tf_checkpoint(path, wanted)
    except BundleError as err:
        raise ValueError(str(err)) from err
    out = {}
    for name in names:
        template = jax.tree.map(lambda t: jnp.zeros(t.shape, t.dtype), method.network_template(name))
        out[name] = nets.from_tf(name, arrays, template, source=path, optional=("out",))
    return out


def _dtype(config: ml_collections.ConfigDict) -> Any:
    return {"float32": None, "bfloat16": jnp.bfloat16}[config.dtype]


class DTNPretrain:
    """Stage 1: f (`content_extractor` with its `out` head) trained as a digit classifier."""

    name = "dtn_pretrain"
    networks = ("f",)
    groups = {"f": ("f",)}
    visual_names = ("source",)
    size_multiple = 32

    @classmethod
    def required_init(cls, config: ml_collections.ConfigDict) -> tuple[str, ...]:
        """Stage 1 starts from Glorot-uniform weights: nothing is required."""
        return ()

    @classmethod
    def data_spec(cls, config: ml_collections.ConfigDict) -> DataSpec:
        """The labelled source domain only."""
        d = config.source_domain
        return DataSpec(domains=(d,), channels={d: config.input_nc}, labels=(d,))

    @classmethod
    def validate_config(cls, config: ml_collections.ConfigDict) -> None:
        """Raises ConfigError naming the first DTN key whose value cannot work."""
        _validate_common(config)
        if "augment_shift" in config and not 0 <= config.augment_shift < 16:
            raise ConfigError(f"config.augment_shift={config.augment_shift!r} must be in [0, 16) pixels")

    def __init__(self, config: ml_collections.ConfigDict, steps_per_epoch: int = 1):
        self.config = config
        self.source = config.source_domain
        self.modules = {"f": nets.ContentExtractor(config.nf, config.feature_dim,
                                                   config.num_classes, _dtype(config))}
        self.tx = {"f": _adam(config)}

    def init_variables(self, key: Array) -> dict[str, Any]:
        """Glorot-uniform f, with its classifier head."""
        x = jnp.zeros((1, 32, 32, self.config.input_nc))
        return {"f": self.modules["f"].init(key, x, False)}

    def state_from_variables(self, variables: Mapping[str, Any], key: Array) -> TrainState:
        """A step-0 TrainState around f's variables."""
        params = {n: variables[n]["params"] for n in self.networks}
        model_state = {n: variables[n].get("batch_stats", {}) for n in self.networks}
        opt_state = {g: self.tx[g].init({n: params[n] for n in ns}) for g, ns in self.groups.items()}
        return TrainState(jnp.zeros((), jnp.int32), params, model_state, opt_state, {}, key)

    def create_state(self, key: Array) -> TrainState:
        init_key, state_key = jax.random.split(key)
        return self.state_from_variables(self.init_variables(init_key), state_key)

    def network_template(self, name: str) -> Any:
        """Shapes and dtypes of f's variables."""
        x = jnp.zeros((1, 32, 32, self.config.input_nc))
        return jax.eval_shape(lambda: self.modules[name].init(jax.random.key(0), x, False))

    def import_weights(self, path: str, names: tuple[str, ...]) -> dict[str, Any]:
        """f from a TF checkpoint (the reference's svhn_model-<step>), by variable name."""
        return import_tf_networks(self, path, names)

    def loss(self, params: Mapping[str, Any], model_state: Mapping[str, Any],
             batch: Mapping[str, Array]) -> tuple[Array, dict[str, Any]]:
        """Mean softmax cross-entropy of f's logits (batch statistics, moving averages updated)."""
        variables = {"params": params["f"], "batch_stats": model_state["f"]}
        logits, updated = self.modules["f"].apply(variables, batch[self.source], True, logits=True,
                                                  mutable=["batch_stats"])
        labels = batch[DataSpec.label_key(self.source)]
        loss = losses.cross_entropy(logits, labels)
        accuracy = jnp.mean((jnp.argmax(logits, -1) == labels).astype(jnp.float32))
        return loss, {"accuracy": accuracy, "model_state": {"f": updated["batch_stats"]}}

    def augment(self, images: Array, key: Array) -> Array:
        """Each image shifted by a random (dy, dx) in [-s, s]^2, edge-padded; s = config.augment_shift."""
        s = int(self.config.get("augment_shift", 0))
        n, h, w, c = images.shape
        padded = jnp.pad(images, ((0, 0), (s, s), (s, s), (0, 0)), mode="edge")
        offsets = jax.random.randint(key, (n, 2), 0, 2 * s + 1)
        crop = lambda image, o: jax.lax.dynamic_slice(image, (o[0], o[1], 0), (h, w, c))
        return jax.vmap(crop)(padded, offsets)

    def train_step(self, state: TrainState, batch: Mapping[str, Array]) -> tuple[TrainState, dict[str, Array]]:
        """One Adam step on the classification loss (of shifted images when config.augment_shift > 0)."""
        key = state.key
        if self.config.get("augment_shift", 0):
            key, sub = jax.random.split(key)
            batch = {**batch, self.source: self.augment(batch[self.source], sub)}
        (loss, aux), grads = jax.value_and_grad(self.loss, has_aux=True)(
            state.params, state.model_state, batch)
        params, opt = apply_group_update(self.tx["f"], state.opt_state["f"], state.params, grads)
        new_state = state.replace(step=state.step + 1, params=params, model_state=aux["model_state"],
                                  opt_state={"f": opt}, key=key)
        return new_state, {"f": loss, "accuracy": aux["accuracy"]}

    def classify(self, params: Mapping[str, Any], model_state: Mapping[str, Any], images: Array) -> Array:
        """f's class predictions in eval mode (moving statistics)."""
        variables = {"params": params["f"], "batch_stats": model_state["f"]}
        return jnp.argmax(self.modules["f"].apply(variables, images, False, logits=True), -1)

    def features(self, params: Mapping[str, Any], model_state: Mapping[str, Any], images: Array) -> Array:
        """(B, feature_dim) penultimate activations of f in eval mode: the classifier-feature FID's space."""
        variables = {"params": params["f"], "batch_stats": model_state["f"]}
        return self.modules["f"].apply(variables, images, False).reshape(images.shape[0], -1)

    def visuals(self, params: Mapping[str, Any], batch: Mapping[str, Array],
                model_state: Mapping[str, Any] | None = None) -> dict[str, Array]:
        """The source images (stage 1 generates nothing)."""
        return {"source": batch[self.source]}

    def after_training(self, state: TrainState, workdir: str) -> dict[str, Any]:
        """Test accuracy of f (eval mode) on the source domain's test split, printed and saved."""
        from unpaired import data  # pylint: disable=import-outside-toplevel

        loader = data.make_loader(self.config.data, split="test", batch_size=self.config.batch_size,
                                  seed=0, spec=self.data_spec(self.config))
        classify = jax.jit(self.classify)
        correct = total = 0
        try:
            for i in range(loader.steps_per_epoch):
                batch = loader.batch(i)
                predicted = classify(state.params, state.model_state, batch[self.source])
                correct += int(jnp.sum(predicted == batch[DataSpec.label_key(self.source)]))
                total += len(predicted)
        finally:
            loader.close()
        result = {"step": int(state.step), "domain": self.source, "split": "test",
                  "accuracy": correct / max(total, 1), "images": total}
        with open(os.path.join(workdir, "accuracy.json"), "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
        print(f"f test accuracy on {self.source}: {result['accuracy']:.4f} ({total} images)")
        return result


class DTN:
    """Stage 2, the paper's objective: networks f (frozen), g and a ternary D."""

    name = "dtn"
    networks = ("f", "g", "D")
    groups = {"g": ("g",), "D": ("D",)}
    visual_names = ("source", "fake_source", "target", "fake_target")
    size_multiple = 32

    @classmethod
    def required_init(cls, config: ml_collections.ConfigDict) -> tuple[str, ...]:
        """f must come from stage 1 (or another trained f): a random f has no content."""
        return ("f",)

    @classmethod
    def data_spec(cls, config: ml_collections.ConfigDict) -> DataSpec:
        """Unlabelled source and target domains."""
        s, t = config.source_domain, config.target_domain
        return DataSpec(domains=(s, t), channels={s: config.input_nc, t: config.output_nc})

    @classmethod
    def validate_config(cls, config: ml_collections.ConfigDict) -> None:
        """Raises ConfigError naming the first DTN key whose value cannot work."""
        _validate_common(config)
        check_present(config, ("alpha", "beta", "gamma", "tv_eps"))
        for key in ("alpha", "beta", "gamma", "tv_eps"):
            check_at_least(config, key, 0)

    def __init__(self, config: ml_collections.ConfigDict, steps_per_epoch: int = 1):
        self.config = config
        self.source, self.target = config.source_domain, config.target_domain
        dtype = _dtype(config)
        self.modules = {
            "f": nets.ContentExtractor(config.nf, config.feature_dim, config.num_classes, dtype),
            "g": nets.Generator(config.ngf, config.output_nc, dtype),
            "D": nets.Discriminator(config.ndf, 3, dtype),
        }
        self.alpha, self.beta = float(config.alpha), float(config.beta)
        self.gamma, self.tv_eps = float(config.gamma), float(config.tv_eps)
        self.tx = {"g": _adam(config), "D": _adam(config)}
        self.architecture = (f"f nf {config.nf} -> {config.feature_dim}, g ngf {config.ngf}, "
                             f"{config.input_nc}->{config.output_nc} channels")

    # ----------------------------------------------------------------- state
    def _inputs(self) -> dict[str, Array]:
        c = self.config
        return {"f": jnp.zeros((1, 32, 32, c.input_nc)), "g": jnp.zeros((1, 1, 1, c.feature_dim)),
                "D": jnp.zeros((1, 32, 32, c.output_nc))}

    def init_variables(self, key: Array) -> dict[str, Any]:
        """Glorot-uniform f, g, D (f is replaced by config.init_from before training)."""
        x = self._inputs()
        keys = jax.random.split(key, len(self.networks))
        return {n: self.modules[n].init(k, x[n], False) for n, k in zip(self.networks, keys)}

    def state_from_variables(self, variables: Mapping[str, Any], key: Array) -> TrainState:
        """A step-0 TrainState; f has no optimizer state (it is never updated)."""
        params = {n: variables[n]["params"] for n in self.networks}
        model_state = {n: variables[n].get("batch_stats", {}) for n in self.networks}
        opt_state = {g: self.tx[g].init({n: params[n] for n in ns}) for g, ns in self.groups.items()}
        return TrainState(jnp.zeros((), jnp.int32), params, model_state, opt_state, {}, key)

    def create_state(self, key: Array) -> TrainState:
        init_key, state_key = jax.random.split(key)
        return self.state_from_variables(self.init_variables(init_key), state_key)

    def network_template(self, name: str) -> Any:
        """Shapes and dtypes of network `name`'s variables."""
        x = self._inputs()[name]
        return jax.eval_shape(lambda: self.modules[name].init(jax.random.key(0), x, False))

    def import_weights(self, path: str, names: tuple[str, ...]) -> dict[str, Any]:
        """f, g and/or D from a TF checkpoint (svhn_model-<step> for f, dtn-<step>)."""
        return import_tf_networks(self, path, names)

    def load_official(self, path: str, request: TranslationRequest
                      ) -> tuple[dict[str, Any], dict[str, Any], TranslationRequest]:
        """(params, model_state, request) of f and g from a reference `dtn-<step>` checkpoint."""
        served = self.resolve_request(request)
        variables = self.import_weights(path, ("f", "g"))
        params = {n: v["params"] for n, v in variables.items()}
        model_state = {n: v.get("batch_stats", {}) for n, v in variables.items()}
        return params, model_state, served

    # ----------------------------------------------------------------- losses
    def generator_loss(self, g_params: Mapping[str, Any], f_params: Any, d_params: Any,
                       model_state: Mapping[str, Any], batch: Mapping[str, Array]
                       ) -> tuple[Array, dict[str, Any]]:
        """L_G and its terms; every network in training mode, in the reference's call order."""
        run = _Runner(self.modules, model_state, None, train=True)
        f_params = jax.lax.stop_gradient(f_params)
        d_params = jax.lax.stop_gradient(d_params)
        s, t = batch[self.source], batch[self.target]
        fs = run("f", f_params, s)
        fake_s = run("g", g_params["g"], fs)
        fake_t = run("g", g_params["g"], run("f", f_params, t))
        terms = {
            "G_src": losses.cross_entropy(run("D", d_params, fake_s), 2),
            "G_trg": losses.cross_entropy(run("D", d_params, fake_t), 2),
        }
        terms["const"] = self.alpha * losses.mse_loss(run("f", f_params, fake_s), fs)
        terms["tid"] = self.beta * losses.mse_loss(fake_t, t)
        terms["tv"] = self.gamma * losses.tv_loss(fake_s, eps=self.tv_eps)
        total = sum(terms.values())
        fakes = {"fake_source": fake_s, "fake_target": fake_t}
        return total, {"terms": terms, "fakes": fakes, "model_state": run.model_state}

    def discriminator_loss(self, d_params: Any, model_state: Mapping[str, Any],
                           batch: Mapping[str, Array], fake_s: Array, fake_t: Array
                           ) -> tuple[Array, dict[str, Any]]:
        """L_D: fake-from-source -> class 0, fake-from-target -> 1, real target -> 2."""
        run = _Runner(self.modules, model_state, None, train=True)
        terms = {
            "D_fake_src": losses.cross_entropy(run("D", d_params, jax.lax.stop_gradient(fake_s)), 0),
            "D_fake_trg": losses.cross_entropy(run("D", d_params, jax.lax.stop_gradient(fake_t)), 1),
            "D_real": losses.cross_entropy(run("D", d_params, batch[self.target]), 2),
        }
        return sum(terms.values()), {"terms": terms, "model_state": run.model_state}

    def train_step(self, state: TrainState, batch: Mapping[str, Array]) -> tuple[TrainState, dict[str, Array]]:
        """The g update (D and f frozen), then the D update on the same, pre-update fakes."""
        p = state.params
        (g_loss, g_aux), g_grads = jax.value_and_grad(self.generator_loss, has_aux=True)(
            {"g": p["g"]}, p["f"], p["D"], state.model_state, batch)
        new_g, g_opt = apply_group_update(self.tx["g"], state.opt_state["g"], {"g": p["g"]}, g_grads)
        fakes = g_aux["fakes"]
        (d_loss, d_aux), d_grads = jax.value_and_grad(self.discriminator_loss, has_aux=True)(
            p["D"], g_aux["model_state"], batch, fakes["fake_source"], fakes["fake_target"])
        new_d, d_opt = apply_group_update(self.tx["D"], state.opt_state["D"], {"D": p["D"]}, {"D": d_grads})
        metrics = {**g_aux["terms"], **d_aux["terms"], "G": g_loss, "D": d_loss}
        new_state = state.replace(
            step=state.step + 1, params={"f": p["f"], **new_g, **new_d},
            model_state=d_aux["model_state"], opt_state={"g": g_opt, "D": d_opt})
        return new_state, metrics

    def after_training(self, state: TrainState, workdir: str) -> dict[str, Any] | None:
        """Translation accuracy as the paper measures it, if config.eval_classifier is set.

        A target-domain classifier (a `dtn_pretrain` workdir trained on the target domain)
        labels G(source test images) in eval mode; the score uses the source labels.
        Printed and written to `<workdir>/translation_accuracy.json`.
        """
        path = self.config.get("eval_classifier", "")
        if not path:
            return None
        from unpaired import data, translate  # pylint: disable=import-outside-toplevel

        classifier, clf_state, clf_config = translate.load_workdir_state(path)
        if not hasattr(classifier, "classify"):
            raise ValueError(f"config.eval_classifier={path!r} is a {clf_config.method} run; "
                             "expected a dtn_pretrain run trained on the target domain")
        spec = DTNPretrain.data_spec(self.config)  # the source domain, with its labels
        loader = data.make_loader(self.config.data, split="test", batch_size=self.config.batch_size,
                                  seed=0, spec=spec)
        score = jax.jit(lambda p, ms, cp, cs, x: classifier.classify(
            cp, cs, self.translate(p, x, "AtoB", ms)))
        correct = total = 0
        try:
            for i in range(loader.steps_per_epoch):
                batch = loader.batch(i)
                predicted = score(state.params, state.model_state, clf_state.params,
                                  clf_state.model_state, batch[self.source])
                correct += int(jnp.sum(predicted == batch[DataSpec.label_key(self.source)]))
                total += len(predicted)
        finally:
            loader.close()
        result = {"step": int(state.step), "source": self.source, "target": self.target,
                  "classifier": os.path.abspath(path), "accuracy": correct / max(total, 1),
                  "images": total}
        with open(os.path.join(workdir, "translation_accuracy.json"), "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
        print(f"translation accuracy {self.source}->{self.target}: {result['accuracy']:.4f} "
              f"({total} source test images)")
        return result

    # ----------------------------------------------------------------- inference
    def resolve_request(self, request: TranslationRequest) -> TranslationRequest:
        """DTN translates source -> target only: AtoB, or --target naming the target domain."""
        if request.code is not None:
            raise ValueError("--code does not apply to dtn (one direction: source to target)")
        if request.direction not in (None, "AtoB"):
            raise ValueError(f"--direction={request.direction} is not served: dtn translates "
                             f"source {self.source} to target {self.target} only (AtoB)")
        if request.target not in (None, self.target, 1):
            raise ValueError(f"--target={request.target!r} is not served: dtn's target domain is "
                             f"{self.target!r}")
        return TranslationRequest(direction="AtoB")

    def translation_channels(self, request: TranslationRequest) -> tuple[int, int]:
        self.resolve_request(request)
        return self.config.input_nc, self.config.output_nc

    def describe(self, request: TranslationRequest) -> str:
        self.resolve_request(request)
        return f"G = g(f(x)): {self.architecture}"

    def translate(self, params: Mapping[str, Any], images: Array,
                  request: str | TranslationRequest = "AtoB",
                  model_state: Mapping[str, Any] | None = None,
                  train: bool = False, key: Array | None = None) -> Array:
        """g(f(images)), images 32x32 in [-1, 1]; eval mode (moving statistics) unless `train`."""
        if not isinstance(request, str):
            self.resolve_request(request)
        run = _Runner(self.modules, model_state or {}, None, train=train)
        return run("g", params["g"], run("f", params["f"], images))

    def visuals(self, params: Mapping[str, Any], batch: Mapping[str, Array],
                model_state: Mapping[str, Any] | None = None) -> dict[str, Array]:
        """source | G(source) | target | G(target)."""
        s, t = batch[self.source], batch[self.target]
        fake = lambda x: self.translate(params, x, "AtoB", model_state)
        return {"source": s, "fake_source": fake(s), "target": t, "fake_target": fake(t)}
