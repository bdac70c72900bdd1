"""UNIT's digit domain adaptation (version_02 `COCOGANDAContextTrainer`) as pure functions.

Domain A is the labelled source, B the target. One `train_step` is one iteration of the
reference's `cocogan_train_domain_adaptation.py`: `dis_update` (real/fake on both
domains, the digit classifier on labelled A, feature matching), then `gen_update` against
the updated discriminator, on the same batch. The generator runs in train mode throughout,
so each of its two forward passes per iteration updates the BatchNorm running statistics
(unbiased variance, as PyTorch). Random draws (the VAE noise, the discriminator's dropout)
come from the state key, or are injected for parity tests. Facts: `shared/reference/unit.md` §3.2.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from unpaired import losses, schedules, torch_io
from unpaired.config_checks import ConfigError, check_at_least
from unpaired.data.spec import DataSpec
from unpaired.methods.translation import TranslationRequest, resolve_two_domains
from unpaired.nets import unit_da as nets
from unpaired.state import TrainState, apply_group_update
from unpaired.weights import read_torch_file, write_torch_file

Array = jax.Array
SOURCE, TARGET = "A", "B"
WEIGHTS = ("gan_w", "cls_w", "feature_w", "kl_normalized_direct_w", "ll_normalized_direct_w")
# The draws of one iteration, in the reference's order: VAE noise and dropout mask sets.
DIS_DRAWS = ("true", "eps", "recon", "trans", "cls")
GEN_DRAWS = ("eps", "recon", "trans")


def kl_loss(mu: Array, sd: Array) -> Array:
    """sum(mu^2 + sd^2 - log sd^2) / batch: the full mu/sigma VAE prior term (up to constants)."""
    mu2, sd2 = jnp.square(mu), jnp.square(sd)
    return jnp.sum(mu2 + sd2 - jnp.log(sd2)) / mu.shape[0]


def ll_loss(a: Array, b: Array) -> Array:
    """The reference's MSE * C*H*W: squared error summed per sample, averaged over the batch."""
    return jnp.sum(jnp.square(a - b)) / b.shape[0]


def adam_coupled_l2(lr: float, b1: float, b2: float, weight_decay: float) -> optax.GradientTransformation:
    """torch.optim.Adam(lr, (b1, b2), weight_decay): wd * param added to the gradient first."""
    return optax.chain(optax.add_decayed_weights(weight_decay), schedules.adam(lr, b1, b2))


class UNITDA:
    """CoVAE32x32 (network `gen`) and CoDis32x32 (network `dis`), each its own Adam."""

    name = "unit_da"
    networks = ("gen", "dis")
    groups = {"gen": ("gen",), "dis": ("dis",)}
    visual_names = ("x_a", "x_aa", "x_ab", "x_b", "x_bb", "x_ba")
    size_multiple = input_size = nets.IMAGE_SIZE  # CoVAE32x32 takes no other size

    # ----------------------------------------------------------------- config
    @classmethod
    def required_init(cls, config: ml_collections.ConfigDict) -> tuple[str, ...]:
        return ()

    @classmethod
    def data_spec(cls, config: ml_collections.ConfigDict) -> DataSpec:
        """A (source) with its labels, B (target) without: target labels are for evaluation only."""
        return DataSpec(domains=(SOURCE, TARGET),
                        channels={SOURCE: config.input_dim_a, TARGET: config.input_dim_b},
                        labels=(SOURCE,))

    @classmethod
    def validate_config(cls, config: ml_collections.ConfigDict) -> None:
        """Raises ConfigError naming the first unit_da key whose value cannot work."""
        for key in ("input_dim_a", "input_dim_b", "gen_ch", "dis_ch", "test_batch_size"):
            check_at_least(config, key, 1)
        for key in WEIGHTS + ("weight_decay",):
            check_at_least(config, key, 0)
        if not config.lr > 0:
            raise ConfigError(f"config.lr={config.lr!r} must be > 0")
        for key in ("beta1", "beta2"):
            if not 0 <= config[key] < 1:
                raise ConfigError(f"config.{key}={config[key]!r} must be in [0, 1)")
        if config.dtype != "float32":
            raise ConfigError(f"config.dtype={config.dtype!r}: unit_da runs in float32 only")
        if config.batch_size < 2:
            raise ConfigError(f"config.batch_size={config.batch_size} must be at least 2 "
                              "(BatchNorm statistics of the domain-specific first layer)")
        if config.data.crop_size != nets.IMAGE_SIZE:
            raise ConfigError(f"config.data.crop_size={config.data.crop_size} must be "
                              f"{nets.IMAGE_SIZE}: CoVAE32x32/CoDis32x32 take 32x32 images")

    # ----------------------------------------------------------------- build
    def __init__(self, config: ml_collections.ConfigDict, steps_per_epoch: int = 1):
        del steps_per_epoch  # constant learning rate, as the reference
        self.config = config
        self.channels = {SOURCE: int(config.input_dim_a), TARGET: int(config.input_dim_b)}
        self.modules = {"gen": nets.CoVAE32x32(int(config.gen_ch), self.channels[SOURCE],
                                               self.channels[TARGET]),
                        "dis": nets.CoDis32x32(int(config.dis_ch))}
        self.w = {k: float(config[k]) for k in WEIGHTS}
        tx = adam_coupled_l2(float(config.lr), float(config.beta1), float(config.beta2),
                             float(config.weight_decay))
        self.tx = {"gen": tx, "dis": tx}

    def _example_inputs(self, name: str, n: int = 2) -> tuple[Any, ...]:
        size = nets.IMAGE_SIZE
        a, b = self.channels[SOURCE], self.channels[TARGET]
        if name == "gen":
            return (jax.ShapeDtypeStruct((n, size, size, a + 2), jnp.float32),
                    jax.ShapeDtypeStruct((n, size, size, b + 2), jnp.float32))
        return (jax.ShapeDtypeStruct((n, size, size, a), jnp.float32),
                jax.ShapeDtypeStruct((n, size, size, b), jnp.float32))

    def init_variables(self, key: Array) -> dict[str, Any]:
        """Fresh variables as the trainer inits: G conv weights N(0, 0.02) (conv biases 0 here,
        PyTorch's default uniform there; Bias2d N(0, 0.002)); D convs xavier-uniform (gain
        sqrt 2), biases 0.1."""
        out = {}
        for name, k in zip(self.networks, jax.random.split(key, len(self.networks))):
            x = [jnp.zeros(s.shape, s.dtype) for s in self._example_inputs(name)]
            out[name] = jax.jit(self.modules[name].init)(k, *x)
        out["dis"] = {"params": jax.tree_util.tree_map_with_path(
            lambda p, v: jnp.full_like(v, 0.1) if p[-1].key == "bias" else v, out["dis"]["params"])}
        return out

    def network_template(self, name: str) -> Any:
        """Shapes and dtypes of network `name`'s variables (nothing is computed)."""
        return jax.eval_shape(lambda *x: self.modules[name].init(jax.random.key(0), *x),
                              *self._example_inputs(name))

    def state_from_variables(self, variables: Mapping[str, Any], key: Array) -> TrainState:
        """A step-0 TrainState around given network variables (gen's BatchNorm statistics too)."""
        params = {n: variables[n]["params"] for n in self.networks}
        model_state = {n: dict(variables[n].get("batch_stats", {})) for n in self.networks}
        opt_state = {g: self.tx[g].init({n: params[n] for n in ns}) for g, ns in self.groups.items()}
        return TrainState(jnp.zeros((), jnp.int32), params, model_state, opt_state, {}, key)

    def create_state(self, key: Array) -> TrainState:
        init_key, state_key = jax.random.split(key)
        return self.state_from_variables(self.init_variables(init_key), state_key)

    # ----------------------------------------------------------------- passes
    def generate(self, params: Any, stats: Any, x_a: Array, x_b: Array, eps: Array | None
                 ) -> tuple[tuple[Array, ...], Any]:
        """The reference's gen forward in train mode: (x_aa, x_ba, x_ab, x_bb, mu, sd), new stats."""
        out, updated = self.modules["gen"].apply(
            {"params": params, "batch_stats": stats}, nets.with_xy(x_a), nets.with_xy(x_b), eps,
            train=True, mutable=["batch_stats"])
        return out, updated["batch_stats"]

    def discriminate(self, params: Any, x_a: Array, x_b: Array, keep: Any) -> tuple[Array, Array, Array]:
        return self.modules["dis"].apply({"params": params}, x_a, x_b, keep)

    def classify(self, params: Any, x: Array, domain: str, keep: Any = None) -> Array:
        """Digit logits of the D trunk's classifier head (`keep=None`: eval mode, no dropout)."""
        return self.modules["dis"].apply({"params": params}, x, domain, keep, method="classify")

    def _draws(self, key_or_noise: Any, names: tuple[str, ...], n: int, latent_shape: tuple[int, ...]
               ) -> dict[str, Any]:
        """Injected draws, or the VAE noise and dropout masks drawn from a key."""
        if isinstance(key_or_noise, Mapping):
            return dict(key_or_noise)
        ch = int(self.config.dis_ch)
        out = {}
        for i, name in enumerate(names):
            k = jax.random.fold_in(key_or_noise, i)
            if name == "eps":
                out[name] = jax.random.normal(k, latent_shape, jnp.float32)
            else:
                out[name] = nets.dropout_masks(k, n if name == "cls" else 2 * n, ch)
        return out

    def _latent_shape(self, n: int) -> tuple[int, ...]:
        return (2 * n, 1, 1, 8 * int(self.config.gen_ch))

    def discriminator_loss(self, d_params: Any, g_params: Any, g_stats: Any, batch: Mapping[str, Array],
                           noise: Any) -> tuple[Array, dict[str, Any]]:
        """`dis_update`'s loss; aux holds the terms and the generator's updated BN statistics."""
        x_a, x_b = batch[SOURCE], batch[TARGET]
        labels = batch[DataSpec.label_key(SOURCE)].astype(jnp.int32)
        n = x_a.shape[0]
        draws = self._draws(noise, DIS_DRAWS, n, self._latent_shape(n))
        true_res, _, _ = self.discriminate(d_params, x_a, x_b, draws["true"])
        (x_aa, x_ba, x_ab, x_bb, _, _), g_stats = self.generate(
            jax.lax.stop_gradient(g_params), g_stats, x_a, x_b, draws["eps"])
        recon_res, feat_aa, feat_bb = self.discriminate(d_params, x_aa, x_bb, draws["recon"])
        trans_res, feat_ba, feat_ab = self.discriminate(d_params, x_ba, x_ab, draws["trans"])
        cls_logits = self.classify(d_params, x_a, SOURCE, draws["cls"])
        t = {
            "ad_true": losses.cross_entropy(true_res, 1),
            "ad_fake": 0.5 * (losses.cross_entropy(trans_res, 0) + losses.cross_entropy(recon_res, 0)),
            "feature_a": ll_loss(feat_ab, feat_aa),
            "feature_b": ll_loss(feat_ba, feat_bb),
            "cls": losses.cross_entropy(cls_logits, labels),
        }
        w = self.w
        total = (w["gan_w"] * (t["ad_true"] + t["ad_fake"]) + w["cls_w"] * t["cls"]
                 + w["feature_w"] * (t["feature_a"] + t["feature_b"]))
        t["cls_acc"] = jnp.mean((jnp.argmax(cls_logits, -1) == labels).astype(jnp.float32))
        return total, {"terms": t, "gen_stats": jax.lax.stop_gradient(g_stats)}

    def generator_loss(self, g_params: Any, g_stats: Any, d_params: Any, batch: Mapping[str, Array],
                       noise: Any) -> tuple[Array, dict[str, Any]]:
        """`gen_update`'s loss: adversarial (recon and translation streams), KL and recon terms."""
        d = jax.lax.stop_gradient(d_params)
        x_a, x_b = batch[SOURCE], batch[TARGET]
        n = x_a.shape[0]
        draws = self._draws(noise, GEN_DRAWS, n, self._latent_shape(n))
        (x_aa, x_ba, x_ab, x_bb, mu, sd), g_stats = self.generate(g_params, g_stats, x_a, x_b,
                                                                   draws["eps"])
        recon_res, _, _ = self.discriminate(d, x_aa, x_bb, draws["recon"])
        trans_res, _, _ = self.discriminate(d, x_ba, x_ab, draws["trans"])
        t = {"ad": losses.cross_entropy(trans_res, 1) + losses.cross_entropy(recon_res, 1),
             "ll_a": ll_loss(x_aa, x_a), "ll_b": ll_loss(x_bb, x_b), "kl": 2 * kl_loss(mu, sd)}
        w = self.w
        total = (w["gan_w"] * t["ad"] + w["kl_normalized_direct_w"] * t["kl"]
                 + w["ll_normalized_direct_w"] * (t["ll_a"] + t["ll_b"]))
        return total, {"terms": t, "gen_stats": jax.lax.stop_gradient(g_stats),
                       "images": {"x_aa": x_aa, "x_ba": x_ba, "x_ab": x_ab, "x_bb": x_bb}}

    # ----------------------------------------------------------------- step
    def train_step(self, state: TrainState, batch: Mapping[str, Array],
                   noise: Mapping[str, Any] | None = None) -> tuple[TrainState, dict[str, Array]]:
        """One iteration: D update, then G update against the updated D (same batch).

        Draws come from `state.key`; tests may inject `noise={'dis': {...}, 'gen': {...}}`
        (keys DIS_DRAWS / GEN_DRAWS; 'eps' (2N, 1, 1, 8 gen_ch), dropout entries 4 NHWC masks).
        """
        next_key, dis_key, gen_key = jax.random.split(state.key, 3)
        if noise is not None:
            dis_key, gen_key = noise["dis"], noise["gen"]
        g_params, d_params = state.params["gen"], state.params["dis"]
        (d_loss, d_aux), d_grads = jax.value_and_grad(self.discriminator_loss, has_aux=True)(
            d_params, g_params, state.model_state["gen"], batch, dis_key)
        new_d, d_opt = apply_group_update(self.tx["dis"], state.opt_state["dis"], {"dis": d_params},
                                          {"dis": d_grads})
        (g_loss, g_aux), g_grads = jax.value_and_grad(self.generator_loss, has_aux=True)(
            g_params, d_aux["gen_stats"], new_d["dis"], batch, gen_key)
        new_g, g_opt = apply_group_update(self.tx["gen"], state.opt_state["gen"], {"gen": g_params},
                                          {"gen": g_grads})
        metrics = {**g_aux["terms"], **d_aux["terms"], "G": g_loss, "D": d_loss}
        new_state = state.replace(
            step=state.step + 1, params={**new_g, **new_d},
            model_state={**state.model_state, "gen": g_aux["gen_stats"]},
            opt_state={"gen": g_opt, "dis": d_opt}, key=next_key)
        return new_state, metrics

    # ----------------------------------------------------------------- evaluation
    def digit_accuracy(self, params: Mapping[str, Any], model_state: Mapping[str, Any],
                       images: Array, labels: Array, domain: str | None = None) -> Array:
        """Fraction of `images` of `domain` (default the target B) whose argmax classifier logit,
        through that domain's first D layers and the shared trunk, equals `labels` (eval mode:
        no dropout), as the reference's test-set evaluation; `model_state` is unused (D has no BN)."""
        del model_state
        logits = self.classify(params["dis"], images, TARGET if domain is None else domain)
        return jnp.mean((jnp.argmax(logits, -1) == labels).astype(jnp.float32))

    def after_training(self, state: TrainState, workdir: str, load_run: Any) -> dict[str, Any]:
        """Target (B) test accuracy of the D trunk's classifier, printed and saved as da_accuracy.json."""
        del load_run
        from unpaired import data  # pylint: disable=import-outside-toplevel

        spec = DataSpec(domains=(TARGET,), channels={TARGET: self.channels[TARGET]}, labels=(TARGET,))
        accuracy = jax.jit(self.digit_accuracy)
        correct = total = 0
        size = int(self.config.test_batch_size)
        # Full batches, then the ragged rest one image at a time (the loader drops it).
        loader = data.make_loader(self.config.data, split="test", batch_size=1, seed=0, spec=spec)
        count = loader.num_samples
        loader.close()
        for batch_size, first, last in ((size, 0, count // size), (1, count // size * size, count)):
            if last <= first:
                continue
            loader = data.make_loader(self.config.data, split="test", batch_size=batch_size,
                                      seed=0, spec=spec)
            try:
                for i in range(first, last):
                    batch = loader.batch(i)
                    n = len(batch[TARGET])
                    acc = accuracy(state.params, state.model_state, batch[TARGET],
                                   batch[DataSpec.label_key(TARGET)])
                    correct += round(float(acc) * n)
                    total += n
            finally:
                loader.close()
        result = {"step": int(state.step), "domain": TARGET, "split": "test",
                  "accuracy": correct / max(total, 1), "images": total}
        with open(os.path.join(workdir, "da_accuracy.json"), "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
        print(f"unit_da target ({TARGET}) test accuracy: {result['accuracy']:.4f} ({total} images)")
        return result

    # ----------------------------------------------------------------- inference
    def resolve_request(self, request: TranslationRequest) -> TranslationRequest:
        return resolve_two_domains(request, self.name)

    def translation_channels(self, request: TranslationRequest) -> tuple[int, int]:
        direction = self.resolve_request(request).direction
        src, dst = (SOURCE, TARGET) if direction == "AtoB" else (TARGET, SOURCE)
        return self.channels[src], self.channels[dst]

    def describe(self, request: TranslationRequest) -> str:
        direction = self.resolve_request(request).direction
        return (f"CoVAE32x32 {direction} (ch {self.config.gen_ch}, code mean, no noise), "
                f"{'->'.join(map(str, self.translation_channels(request)))} channels")

    def translate(self, params: Mapping[str, Any], images: Array,
                  request: str | TranslationRequest = "AtoB",
                  model_state: Mapping[str, Any] | None = None,
                  train: bool = False, key: Array | None = None) -> Array:
        """32x32 images through the shared code's mean: running BN statistics (eval), or the
        batch's own statistics when `train` (the reference never switches G to eval mode)."""
        del key  # no dropout in the generator; the code's mean is decoded
        direction = request if isinstance(request, str) else self.resolve_request(request).direction
        if images.shape[1:3] != (nets.IMAGE_SIZE, nets.IMAGE_SIZE):
            raise ValueError(f"unit_da translates {nets.IMAGE_SIZE}x{nets.IMAGE_SIZE} images, "
                             f"got {images.shape[1]}x{images.shape[2]}")
        src, dst = (SOURCE, TARGET) if direction == "AtoB" else (TARGET, SOURCE)
        variables = {"params": params["gen"], "batch_stats": (model_state or {}).get("gen", {})}
        out = self.modules["gen"].apply(variables, nets.with_xy(images), src, dst, train,
                                        method="translate", mutable=["batch_stats"] if train else False)
        return out[0] if train else out

    def visuals(self, params: Mapping[str, Any], batch: Mapping[str, Array],
                model_state: Mapping[str, Any] | None = None) -> dict[str, Array]:
        """x_a | x_aa | x_ab | x_b | x_bb | x_ba from the joint forward as the reference saves
        them (batch statistics, state unchanged), decoding the code's mean."""
        stats = (model_state or {}).get("gen", {})
        (x_aa, x_ba, x_ab, x_bb, _, _), _ = self.generate(params["gen"], stats, batch[SOURCE],
                                                          batch[TARGET], None)
        return {"x_a": batch[SOURCE], "x_aa": x_aa, "x_ab": x_ab,
                "x_b": batch[TARGET], "x_bb": x_bb, "x_ba": x_ba}

    # ----------------------------------------------------------------- weights
    def import_weights(self, path: str, names: tuple[str, ...]) -> dict[str, Any]:
        """{name: variables} from a version_02 `*_gen_XXXXXXXX.pkl` / `*_dis_XXXXXXXX.pkl`
        (one state_dict each). PyTorch-0.3 files lack BatchNorm's `num_batches_tracked`: 0."""
        if len(names) != 1 or names[0] not in self.networks:
            raise ValueError(f"{path} holds one unit_da network: config.init_networks must be gen "
                             f"or dis (got {','.join(names) or 'nothing'})")
        name = names[0]
        state_dict = read_torch_file(path)
        if not isinstance(state_dict, Mapping):
            raise ValueError(f"{path} is not a state_dict (found {type(state_dict).__name__})")
        state_dict = {str(k): np.asarray(v) for k, v in state_dict.items()}
        template = self.network_template(name)
        for key in torch_io.key_table(template):
            if key.endswith(".num_batches_tracked") and key not in state_dict:
                state_dict[key] = np.zeros((), np.int64)
        hint = "check config.gen_ch, dis_ch, input_dim_a/b against the yaml the file was trained with"
        variables = torch_io.from_state_dict(state_dict, template, source=path, hint=hint)
        return {name: variables}

    def load_official(self, path: str, request: TranslationRequest
                      ) -> tuple[dict[str, Any], dict[str, Any], TranslationRequest]:
        """(params, model_state, request) from a version_02 gen state_dict file: both directions."""
        served = self.resolve_request(request)
        variables = self.import_weights(path, ("gen",))["gen"]
        return ({"gen": variables["params"]}, {"gen": variables.get("batch_stats", {})}, served)

    def official_state_dict(self, params: Mapping[str, Any], model_state: Mapping[str, Any],
                            name: str = "gen") -> dict[str, np.ndarray]:
        """Network `name` as the reference's `state_dict()` (BatchNorm statistics included)."""
        variables = {"params": params[name]}
        if model_state.get(name):
            variables["batch_stats"] = model_state[name]
        return torch_io.to_state_dict(variables)

    def export_official(self, params: Mapping[str, Any], model_state: Mapping[str, Any],
                        path: str) -> list[str]:
        """`gen.pkl` and `dis.pkl` under folder `path`: the state_dicts version_02's trainer
        saves as `*_gen_XXXXXXXX.pkl` / `*_dis_XXXXXXXX.pkl` (the `unpaired.export` hook)."""
        params, model_state = jax.device_get((params, model_state))
        os.makedirs(path, exist_ok=True)
        written = []
        for name in [n for n in ("gen", "dis") if n in params]:  # official files hold gen only
            out = os.path.join(path, f"{name}.pkl")
            write_torch_file(self.official_state_dict(params, model_state, name), out)
            written.append(out)
        return written
