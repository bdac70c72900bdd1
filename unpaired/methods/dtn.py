"""DTN (Taigman, Polyak, Wolf 2017) in two registered stages over the TrainState seams.

* `dtn_pretrain` (stage 1): f as a 10-way classifier on the labelled source domain,
  mean softmax cross-entropy, Adam; its test accuracy is printed and written to
  `<workdir>/accuracy.json` when the run ends.
* `dtn` (stage 2): G = g o f with f frozen (taken from stage 1 via config.init_from:
  `required_init` is ('f',)), the paper's objective: a ternary D (fake-from-source 0,
  fake-from-target 1, real target 2) and
  L_G = L_GANG + alpha L_CONST + beta L_TID + gamma L_TV (MSE distances; TV anisotropic
  with B = 1 on the (H-1)x(W-1) pixels that have a right and a lower neighbour).

`config.variant='code'` trains stage 2 as the public TF code does instead (binary D; five
train ops with their own TF Adam, `unpaired.tf_adam`: d_src x1, g_src x6, f_src (L_CONST
training f only) when the batch index is a multiple of 15 (30 after step 1600), d_trg x2,
g_trg x4), all inside one jitted `train_step`: the schedule comes from `state.step`.
`config.f_arch='paper'` swaps f for the paper's conv + max-pool extractor (both stages).

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
import numpy as np
import optax

from unpaired import losses, schedules
from unpaired.config_checks import ConfigError, check_at_least, check_present
from unpaired.data.sets import batched, load_set
from unpaired.data.spec import DataSpec
from unpaired.methods.cyclegan import _Runner
from unpaired.methods.translation import TranslationRequest
from unpaired.nets import dtn as nets
from unpaired.state import TrainState, apply_group_update
from unpaired.tf_adam import tf_adam

Array = jax.Array
log = logging.getLogger(__name__)
NETWORK_KEYS = ("nf", "feature_dim", "num_classes", "ngf", "ndf", "input_nc", "output_nc")
VARIANTS = ("paper", "code")
# The public code's five train ops (dtn.md 2.5), each with its own TF Adam, in run order.
CODE_GROUPS = {"d_src": ("D",), "g_src": ("g",), "f_src": ("f",), "d_trg": ("D",), "g_trg": ("g",)}
CODE_UPDATE_KEYS = ("d_src_updates", "g_src_updates", "d_trg_updates", "g_trg_updates")
CODE_F_KEYS = ("f_interval", "f_interval_late", "f_interval_switch")


def _adam(config: ml_collections.ConfigDict,
          learning_rate: float | optax.Schedule | None = None) -> optax.GradientTransformation:
    """torch.optim.Adam(lr, (beta1, beta2), adam_eps), at a constant rate (the reference's)
    unless a schedule is given."""
    return optax.inject_hyperparams(optax.adam)(
        learning_rate=config.lr if learning_rate is None else learning_rate,
        b1=config.beta1, b2=config.beta2, eps=config.adam_eps)


def _stage1_schedule(config: ml_collections.ConfigDict, steps_per_epoch: int
                     ) -> float | optax.Schedule:
    """Stage 1's learning rate: constant (the reference's), or with config.lr_schedule='cosine'
    decayed to 0 over n_epochs x steps_per_epoch (the classifier presets: late small steps
    settle a network that fits its 6-7k training images long before the end)."""
    kind = config.get("lr_schedule", "constant")
    total = int(config.n_epochs) * int(steps_per_epoch) if kind == "cosine" else 0
    return schedules.constant_or_cosine(kind, config.lr, total)


def _validate_common(config: ml_collections.ConfigDict) -> None:
    """Keys both stages share: widths, channels, domains, Adam, 32x32 (or 64x64) images."""
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
    if config.get("f_arch", "code") not in nets.F_ARCHS:
        raise ConfigError(f"config.f_arch={config.f_arch!r} must be one of {', '.join(nets.F_ARCHS)}")
    if config.data.crop_size not in nets.SIZES:
        raise ConfigError(f"config.data.crop_size={config.data.crop_size} must be 32 or 64: DTN's "
                          "f and g are the reference's 32x32 networks (64: one more block each)")
    if config.get("f_arch", "code") == "paper" and config.data.crop_size != 32:
        raise ConfigError(f"config.data.crop_size={config.data.crop_size} must be 32 with "
                          "config.f_arch='paper' (the paper's f pools 32x32 down to 1x1)")


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
    if path.endswith(".pth"):
        return _import_pth(method, path, names)
    try:
        present = list_tf_checkpoint(path)
        wanted = [v for v in present if v.split("/")[0] in {nets.SCOPES[n] for n in names}]
        arrays = read_tf_checkpoint(path, wanted)
    except BundleError as err:
        raise ValueError(str(err)) from err
    out = {}
    for name in names:
        template = jax.tree.map(lambda t: jnp.zeros(t.shape, t.dtype), method.network_template(name))
        try:
            out[name] = nets.from_tf(name, arrays, template, source=path, optional=("out",))
        except ValueError as err:
            binary = np.shape(arrays.get("discriminator/conv4/biases", ())) == (1,)
            if name == "D" and binary and getattr(method, "variant", "code") == "paper":
                raise ValueError(f"{err}; this is the public code's binary D: load it with "
                                 "--config.variant=code") from err
            raise
    return out


def f_update_due(step: Array, steps_per_epoch: int, config: ml_collections.ConfigDict) -> Array:
    """Whether the code variant's f op runs at `step`: batch index i = step mod steps_per_epoch,
    i % f_interval == 0, the interval f_interval_late once step > f_interval_switch."""
    interval = jnp.where(step > config.f_interval_switch, config.f_interval_late, config.f_interval)
    return (step % steps_per_epoch) % interval == 0


def _import_pth(method: Any, path: str, names: tuple[str, ...]) -> dict[str, Any]:
    """f (only) from a `.pth` state_dict a user converted, e.g. a face encoder, named and laid
    out like the torch re-expression's content extractor; read without torch."""
    from unpaired.weights import TorchFileError, load_state_dict_file  # pylint: disable=import-outside-toplevel

    if tuple(names) != ("f",):
        raise ValueError(f"config.init_networks={','.join(names)!r}: a .pth file ({path}) "
                         "provides f only")
    try:
        state = load_state_dict_file(path)
    except (OSError, TorchFileError) as err:
        raise ValueError(f"{path}: {err}") from err
    template = jax.tree.map(lambda t: jnp.zeros(t.shape, t.dtype), method.network_template("f"))
    return {"f": nets.from_torch_state("f", state, template, source=path, optional=("out",))}


def _dtype(config: ml_collections.ConfigDict) -> Any:
    return {"float32": None, "bfloat16": jnp.bfloat16}[config.dtype]


def _score_test_set(config: ml_collections.ConfigDict, domain: str, spec: DataSpec,
                    predict: Any, *args: Any) -> tuple[np.ndarray, np.ndarray]:
    """(predicted, labels) over every image of `domain`'s labelled test split (the last
    batch padded, its padding dropped), with `predict(*args, images) -> classes` jitted."""
    test = load_set(config.data, domain, "test", spec.channels[domain], labelled=True)
    jitted = jax.jit(predict)
    return batched(lambda x: jitted(*args, x), test.images, config.batch_size), test.labels


class _DTNState:
    """The TrainState plumbing both stages share, over the stage's `networks`, `groups`, `tx`,
    `modules`, `_inputs()` (one zero batch per network) and `init_variables`."""

    def state_from_variables(self, variables: Mapping[str, Any], key: Array) -> TrainState:
        """A step-0 TrainState; a network in no group (stage 2's f) has no optimizer state."""
        params = {n: variables[n]["params"] for n in self.networks}
        model_state = {n: variables[n].get("batch_stats", {}) for n in self.networks}
        opt_state = {g: self.tx[g].init({n: params[n] for n in ns}) for g, ns in self.groups.items()}
        return TrainState(jnp.zeros((), jnp.int32), params, model_state, opt_state, {}, key)

    def create_state(self, key: Array) -> TrainState:
        """Fresh networks (initialised in one compiled program, as the other methods' are:
        bit-equal to op-by-op, without a compile per op) in a step-0 TrainState."""
        init_key, state_key = jax.random.split(key)
        return self.state_from_variables(jax.jit(self.init_variables)(init_key), state_key)

    def network_template(self, name: str) -> Any:
        """Shapes and dtypes of network `name`'s variables."""
        x = self._inputs()[name]
        return jax.eval_shape(lambda: self.modules[name].init(jax.random.key(0), x, False))


class DTNPretrain(_DTNState):
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
        _stage1_schedule(config, 1)  # an unknown lr_schedule is named here

    def __init__(self, config: ml_collections.ConfigDict, steps_per_epoch: int = 1):
        self.config = config
        self.source = config.source_domain
        self.modules = {"f": nets.ContentExtractor(config.nf, config.feature_dim,
                                                   config.num_classes, _dtype(config),
                                                   config.get("f_arch", "code"))}
        self.tx = {"f": _adam(config, _stage1_schedule(config, steps_per_epoch))}

    def _inputs(self) -> dict[str, Array]:
        size = self.config.data.crop_size
        return {"f": jnp.zeros((1, size, size, self.config.input_nc))}

    def init_variables(self, key: Array) -> dict[str, Any]:
        """Glorot-uniform f, with its classifier head."""
        return {"f": self.modules["f"].init(key, self._inputs()["f"], False)}

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

    def after_training(self, state: TrainState, workdir: str, load_run: Any) -> dict[str, Any]:
        """Test accuracy of f (eval mode) on the source domain's test split, printed and saved."""
        del load_run
        predicted, labels = _score_test_set(self.config, self.source, self.data_spec(self.config),
                                            self.classify, state.params, state.model_state)
        correct, total = int(np.sum(predicted == labels)), len(labels)
        result = {"step": int(state.step), "domain": self.source, "split": "test",
                  "accuracy": correct / max(total, 1), "images": total}
        with open(os.path.join(workdir, "accuracy.json"), "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
        print(f"f test accuracy on {self.source}: {result['accuracy']:.4f} ({total} images)")
        return result


class DTN(_DTNState):
    """Stage 2: the paper's objective (f frozen, ternary D) or, with config.variant='code',
    the public code's (binary D, f trained by L_CONST, five TF Adam groups)."""

    name = "dtn"
    networks = ("f", "g", "D")
    benchmark_note = "stage 2 from a random (Glorot) f, not a pretrained one"
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
        variant = config.get("variant", "paper")
        if variant not in VARIANTS:
            raise ConfigError(f"config.variant={variant!r} must be one of {', '.join(VARIANTS)}")
        if variant == "code":
            check_present(config, CODE_UPDATE_KEYS + CODE_F_KEYS)
            for key in CODE_UPDATE_KEYS + ("f_interval", "f_interval_late"):
                check_at_least(config, key, 1)
            check_at_least(config, "f_interval_switch", 0)
            if config.gamma != 0:
                raise ConfigError(f"config.gamma={config.gamma!r} must be 0 with config.variant="
                                  "'code': the public code has no TV term")

    def __init__(self, config: ml_collections.ConfigDict, steps_per_epoch: int = 1):
        self.config = config
        self.source, self.target = config.source_domain, config.target_domain
        dtype = _dtype(config)
        self.variant = config.get("variant", "paper")
        self.size_multiple = int(config.data.crop_size)  # g makes exactly this size
        self.input_size = self.size_multiple  # f takes no other
        self.steps_per_epoch = max(int(steps_per_epoch), 1)
        self.modules = {
            "f": nets.ContentExtractor(config.nf, config.feature_dim, config.num_classes, dtype,
                                       config.get("f_arch", "code")),
            "g": nets.Generator(config.ngf, config.output_nc, dtype, config.data.crop_size),
            # The paper's ternary D; the public code's binary D (one logit).
            "D": nets.Discriminator(config.ndf, 1 if self.variant == "code" else 3, dtype),
        }
        self.alpha, self.beta = float(config.alpha), float(config.beta)
        self.gamma, self.tv_eps = float(config.gamma), float(config.tv_eps)
        self.tx = {"g": _adam(config), "D": _adam(config)}
        if self.variant == "code":  # five independent tf.train.AdamOptimizer instances
            self.groups = dict(CODE_GROUPS)
            self.tx = {g: tf_adam(config.lr, config.beta1, config.beta2, config.adam_eps)
                       for g in self.groups}
        self.architecture = (f"f nf {config.nf} -> {config.feature_dim}, g ngf {config.ngf}, "
                             f"{config.input_nc}->{config.output_nc} channels")

    # ----------------------------------------------------------------- state
    def _inputs(self) -> dict[str, Array]:
        c, size = self.config, self.config.data.crop_size
        return {"f": jnp.zeros((1, size, size, c.input_nc)), "g": jnp.zeros((1, 1, 1, c.feature_dim)),
                "D": jnp.zeros((1, size, size, c.output_nc))}

    def init_variables(self, key: Array) -> dict[str, Any]:
        """Glorot-uniform f, g, D (f is replaced by config.init_from before training)."""
        x = self._inputs()
        keys = jax.random.split(key, len(self.networks))
        return {n: self.modules[n].init(k, x[n], False) for n, k in zip(self.networks, keys)}

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

    # ----------------------------------------------------- the public code's variant
    def source_graph(self, params: Mapping[str, Any], model_state: Mapping[str, Any],
                     batch: Mapping[str, Array]) -> tuple[dict[str, Array], dict[str, Any]]:
        """The code's source sub-graph: f(s), g, D(fake), f(fake) in training mode.

        Returns ({d_src, g_src, f_src}: the three source ops' losses, model_state with the
        sub-graph's BN moving averages updated once per call, in call order).
        """
        run = _Runner(self.modules, model_state, None, train=True)
        fx = run("f", params["f"], batch[self.source])
        fake = run("g", params["g"], fx)
        logits = run("D", params["D"], fake)
        fgfx = run("f", params["f"], fake)
        terms = {"d_src": losses.bce_with_logits(logits, jnp.zeros_like(logits)),
                 "g_src": losses.bce_with_logits(logits, jnp.ones_like(logits)),
                 "f_src": self.alpha * losses.mse_loss(fx, fgfx)}
        return terms, run.model_state

    def target_graph(self, params: Mapping[str, Any], model_state: Mapping[str, Any],
                     batch: Mapping[str, Array]) -> tuple[dict[str, Array], dict[str, Any]]:
        """The code's target ops: the source sub-graph (its BN updates ride along, as TF's
        UPDATE_OPS do), then f(t), g, D(reconst), D(t).

        Returns ({d_trg, g_trg, g_trg_gan, tid}, model_state); g_trg = g_trg_gan + tid.
        """
        _, model_state = self.source_graph(params, model_state, batch)
        run = _Runner(self.modules, model_state, None, train=True)
        t = batch[self.target]
        reconst = run("g", params["g"], run("f", params["f"], t))
        logits_fake = run("D", params["D"], reconst)
        logits_real = run("D", params["D"], t)
        terms = {"d_trg": (losses.bce_with_logits(logits_fake, jnp.zeros_like(logits_fake))
                           + losses.bce_with_logits(logits_real, jnp.ones_like(logits_real))),
                 "g_trg_gan": losses.bce_with_logits(logits_fake, jnp.ones_like(logits_fake)),
                 "tid": self.beta * losses.mse_loss(reconst, t)}
        terms["g_trg"] = terms["g_trg_gan"] + terms["tid"]
        return terms, run.model_state

    def _code_op(self, group: str, carry: tuple, batch: Mapping[str, Array]) -> tuple[tuple, dict]:
        """One run of train op `group` (e.g. 'g_src'): its loss differentiated with respect to
        its own network only (gradients pass through the others), one TF Adam update."""
        params, model_state, opt_state = carry
        net = self.groups[group][0]
        graph = self.source_graph if group.endswith("_src") else self.target_graph

        def objective(net_params: Any) -> tuple[Array, tuple]:
            terms, new_state = graph({**params, net: net_params}, model_state, batch)
            return terms[group], (terms, new_state)

        (_, (terms, new_state)), grads = jax.value_and_grad(objective, has_aux=True)(params[net])
        new, opt = apply_group_update(self.tx[group], opt_state[group], {net: params[net]},
                                      {net: grads})
        return ({**params, **new}, new_state, {**opt_state, group: opt}), terms

    def _repeat(self, group: str, times: int, carry: tuple, batch: Mapping[str, Array]
                ) -> tuple[tuple, dict]:
        """Op `group` run `times` times (a fori_loop, unrolled: the counts are small and
        static, and XLA:CPU ran the rolled loop 3x slower); the terms of its last run."""
        op = lambda c: self._code_op(group, c, batch)
        shapes = jax.eval_shape(op, carry)[1]
        terms = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), shapes)
        return jax.lax.fori_loop(0, times, lambda _, ct: op(ct[0]), (carry, terms), unroll=True)

    def code_train_step(self, state: TrainState, batch: Mapping[str, Array]
                        ) -> tuple[TrainState, dict[str, Array]]:
        """One iteration of the public code's schedule (dtn.md 2.5), all on this batch:
        d_src x d_src_updates, g_src x g_src_updates, f_src once if `f_update_due`,
        d_trg x d_trg_updates, g_trg x g_trg_updates; every op recomputes its forward.

        Metrics are each op's loss at its last run, before that run's update; `const` is
        f_src's loss (from the last g_src run when f is not due), `f_updated` 1 or 0.
        """
        c = self.config
        carry = (state.params, state.model_state, state.opt_state)
        carry, d_terms = self._repeat("d_src", c.d_src_updates, carry, batch)
        carry, src = self._repeat("g_src", c.g_src_updates, carry, batch)
        due = f_update_due(state.step, self.steps_per_epoch, c)
        carry, f_terms = jax.lax.cond(due, lambda ct: self._code_op("f_src", ct, batch),
                                      lambda ct: (ct, src), carry)
        carry, trg_d = self._repeat("d_trg", c.d_trg_updates, carry, batch)
        carry, trg = self._repeat("g_trg", c.g_trg_updates, carry, batch)
        params, model_state, opt_state = carry
        metrics = {"D_src": d_terms["d_src"], "G_src": src["g_src"], "const": f_terms["f_src"],
                   "D_trg": trg_d["d_trg"], "G_trg": trg["g_trg"], "G_trg_gan": trg["g_trg_gan"],
                   "tid": trg["tid"], "f_updated": due.astype(jnp.float32)}
        new_state = state.replace(step=state.step + 1, params=params, model_state=model_state,
                                  opt_state=opt_state)
        return new_state, metrics

    def train_step(self, state: TrainState, batch: Mapping[str, Array]) -> tuple[TrainState, dict[str, Array]]:
        """The g update (D and f frozen), then the D update on the same, pre-update fakes.

        With config.variant='code' the public code's schedule instead (`code_train_step`).
        """
        if self.variant == "code":
            return self.code_train_step(state, batch)
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

    def after_training(self, state: TrainState, workdir: str, load_run: Any) -> dict[str, Any] | None:
        """Translation accuracy as the paper measures it, if config.eval_classifier is set.

        A target-domain classifier (a `dtn_pretrain` workdir trained on the target domain,
        read by `load_run`) labels G(source test images) in eval mode; the score uses the
        source labels. Printed and written to `<workdir>/translation_accuracy.json`.
        """
        path = self.config.get("eval_classifier", "")
        if not path:
            return None
        classifier, clf_state, clf_config = load_run(path)
        if not hasattr(classifier, "classify"):
            raise ValueError(f"config.eval_classifier={path!r} is a {clf_config.method} run; "
                             "expected a dtn_pretrain run trained on the target domain")
        spec = DTNPretrain.data_spec(self.config)  # the source domain, with its labels
        predicted, labels = _score_test_set(
            self.config, self.source, spec,
            lambda p, ms, cp, cs, x: classifier.classify(cp, cs, self.translate(p, x, "AtoB", ms)),
            state.params, state.model_state, clf_state.params, clf_state.model_state)
        correct, total = int(np.sum(predicted == labels)), len(labels)
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
