"""UNIT (Liu et al. 2017), the current reference (mingyuliutw/UNIT master), as pure functions.

One `train_step` is one iteration of the reference's `train.py`: the learning rate is
stepped, then `dis_update` and then `gen_update` run on the same pair (the G update sees
the updated discriminators). The reduced VAE draws z = h + n with n ~ N(0, I) from the
state key; inference decodes h without noise. Facts: `shared/reference/unit.md` §1-2, §4.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from unpaired import schedules, torch_io
from unpaired.config_checks import ConfigError, check_at_least, check_choice, check_present
from unpaired.data.spec import DataSpec
from unpaired.methods.translation import TranslationRequest, resolve_two_domains
from unpaired.nets import unit as nets
from unpaired.nets import vgg
from unpaired.state import TrainState, apply_group_update
from unpaired.weights import read_torch_file

Array = jax.Array
DIRECTIONS = ("AtoB", "BtoA")
DOMAINS = ("A", "B")
LR_POLICIES = ("step", "constant")
GAN_TYPES = ("lsgan",)
ARCHS = ("master", "version_02")  # config.arch: the current reference, or the NIPS-2017 model
COMPUTE_DTYPES = {"float32": None, "bfloat16": jnp.bfloat16}
# The noise tensors one iteration draws, in the reference's order (dis_update, gen_update).
DIS_NOISE = ("n_a", "n_b")
GEN_NOISE = ("n_a", "n_b", "n_a_recon", "n_b_recon")


def _cat(first: Array, second: Array) -> Array:
    """Two batches through one pass: every UNIT layer acts per sample (IN, the sample LN).

    Interleaved sample by sample, so each device's shard of a data-parallel batch stays there.
    """
    return jnp.stack([first, second], axis=1).reshape((-1,) + first.shape[1:])


def _halves(both: Array) -> tuple[Array, Array]:
    """The two batches of a `_cat` pass's output."""
    pairs = both.reshape((-1, 2) + both.shape[1:])
    return pairs[:, 0], pairs[:, 1]


def check_optimizer(config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError for an lr, StepLR gamma or Adam beta no run trains with (both archs)."""
    if not config.lr > 0:
        raise ConfigError(f"config.lr={config.lr!r} must be > 0")
    if not 0 < config.gamma <= 1:
        raise ConfigError(f"config.gamma={config.gamma!r} must be in (0, 1]")
    for key in ("beta1", "beta2"):
        if not 0 <= config[key] < 1:
            raise ConfigError(f"config.{key}={config[key]!r} must be in [0, 1)")


def check_size_multiple(config: ml_collections.ConfigDict, multiple: int, formula: str) -> None:
    """Raises ConfigError unless the crop size is a multiple of the decoder's upsampling
    `multiple` (spelt `formula` in the message): else the decoder would not give back its size."""
    size = config.data.crop_size
    if size % multiple:
        raise ConfigError(f"config.data.crop_size={size} must be a multiple of {multiple} "
                          f"({formula}) for the decoder to give back its size")


def _noise(noise: Mapping[str, Array] | Array, name: str, names: tuple[str, ...], like: Array) -> Array:
    """Injected noise `noise[name]`, or N(0, I) shaped like `like` drawn from the key `noise`."""
    if isinstance(noise, Mapping):
        return jnp.asarray(noise[name], like.dtype)
    return jax.random.normal(jax.random.fold_in(noise, names.index(name)), like.shape, like.dtype)


def lsgan_dis_loss(fake_outs: tuple[Array, ...], real_outs: tuple[Array, ...]) -> Array:
    """`calc_dis_loss` (lsgan): sum over scales of mean(D(fake)^2) + mean((D(real) - 1)^2)."""
    return sum(jnp.mean(jnp.square(f)) + jnp.mean(jnp.square(r - 1.0))
               for f, r in zip(fake_outs, real_outs))


def lsgan_gen_loss(fake_outs: tuple[Array, ...]) -> Array:
    """`calc_gen_loss` (lsgan): sum over scales of mean((D(fake) - 1)^2); no 1/2."""
    return sum(jnp.mean(jnp.square(f - 1.0)) for f in fake_outs)


def step_lr_schedule(lr: float, policy: str, step_size: int, gamma: float) -> optax.Schedule:
    """lr of update `count` with StepLR stepped *before* each update: lr * gamma^((count+1)//step_size)."""
    if policy not in LR_POLICIES:
        raise ValueError(f"unknown lr_policy {policy!r}; expected one of {LR_POLICIES}")

    def schedule(count):
        if policy == "constant":
            return lr * jnp.ones_like(jnp.asarray(count) * 1.0)
        return lr * gamma ** ((jnp.asarray(count) + 1) // step_size * 1.0)

    return schedule


def adam_coupled_l2(schedule: optax.Schedule, b1: float, b2: float, weight_decay: float
                    ) -> optax.GradientTransformation:
    """torch.optim.Adam(weight_decay=wd): grad + wd * param before the moments (coupled L2)."""
    return optax.chain(optax.add_decayed_weights(weight_decay), schedules.adam(schedule, b1, b2))


def _validate_vgg(config: ml_collections.ConfigDict) -> None:
    """vgg_w > 0 needs RGB domains, crops of at least 16 and a readable VGG16 weight file."""
    for key in ("input_dim_a", "input_dim_b"):
        if config[key] != 3:
            raise ConfigError(f"config.{key}={config[key]!r}: the VGG loss (config.vgg_w > 0) "
                              "needs RGB images (3 channels)")
    if config.data.crop_size < 16:
        raise ConfigError(f"config.data.crop_size={config.data.crop_size}: the VGG loss needs at "
                          "least 16 (relu5_3 is at 1/8 resolution, instance-normalised)")
    path = config.get("vgg_model_path", "")
    if not path:
        raise ConfigError("config.vgg_model_path is empty: config.vgg_w > 0 needs a VGG16 "
                          "state_dict file (the reference's vgg16.weight or torchvision's vgg16)")
    try:
        vgg.load_vgg16(path)
    except vgg.VggWeightsError as err:
        raise ConfigError(f"config.vgg_model_path={path!r}: {err}") from None


class UNIT:
    """UNIT master: VAE-GANs gen_a, gen_b (VAEGen) and discriminators dis_a, dis_b (MsImageDis)."""

    name = "unit"
    networks = ("gen_a", "gen_b", "dis_a", "dis_b")
    groups = {"gen": ("gen_a", "gen_b"), "dis": ("dis_a", "dis_b")}
    visual_names = ("x_a", "x_a_recon", "x_ab", "x_b", "x_b_recon", "x_ba")
    DOMAINS = DOMAINS

    # ----------------------------------------------------------------- config
    @classmethod
    def required_init(cls, config: ml_collections.ConfigDict) -> tuple[str, ...]:
        """UNIT trains in one stage: no network must come from config.init_from."""
        return ()

    @classmethod
    def data_spec(cls, config: ml_collections.ConfigDict) -> DataSpec:
        """Two unlabelled domains: A with input_dim_a channels, B with input_dim_b."""
        return DataSpec(domains=DOMAINS, channels={"A": config.input_dim_a, "B": config.input_dim_b})

    @classmethod
    def validate_config(cls, config: ml_collections.ConfigDict) -> None:
        """Raises ConfigError naming the first UNIT master key whose value cannot work."""
        check_present(config, ("gen_pad_type", "dis_pad_type", "gan_type", "lr_policy", "vgg_w"))
        check_choice(config, "gen_pad_type", nets.PAD_TYPES)
        check_choice(config, "dis_pad_type", nets.PAD_TYPES)
        check_choice(config, "gen_activ", ("relu", "lrelu"))
        check_choice(config, "dis_activ", ("relu", "lrelu"))
        check_choice(config, "dis_norm", ("none", "in"))
        check_choice(config, "gan_type", GAN_TYPES)
        check_choice(config, "lr_policy", LR_POLICIES)
        for key in ("input_dim_a", "input_dim_b", "gen_dim", "gen_n_res", "dis_dim", "dis_n_layer",
                    "dis_num_scales", "step_size"):
            check_at_least(config, key, 1)
        for key in ("gen_n_downsample", "gan_w", "recon_x_w", "recon_kl_w", "recon_x_cyc_w",
                    "recon_kl_cyc_w", "weight_decay"):
            check_at_least(config, key, 0)
        check_optimizer(config)
        shared_g, shared_d = config.get("gen_shared_blocks", 0), config.get("dis_shared_layers", 0)
        if not 0 <= shared_g <= config.gen_n_res:
            raise ConfigError(f"config.gen_shared_blocks={shared_g!r} must be in [0, config.gen_n_res="
                              f"{config.gen_n_res}]")
        if not 0 <= shared_d < config.dis_n_layer:
            raise ConfigError(f"config.dis_shared_layers={shared_d!r} must be in [0, config.dis_n_layer="
                              f"{config.dis_n_layer}): the first conv block stays per domain")
        check_at_least(config, "vgg_w", 0)
        if config.vgg_w > 0:
            _validate_vgg(config)
        if config.recon_h_w != 0:
            raise ConfigError(f"config.recon_h_w={config.recon_h_w!r}: the reference's UNIT trainer "
                              "never reads it (a MUNIT key); set --config.recon_h_w=0")
        size = config.data.crop_size
        check_size_multiple(config, 2**config.gen_n_downsample, "2**config.gen_n_downsample")
        if min(nets.discriminator_sizes(size, config.dis_n_layer, config.dis_num_scales)) < 1:
            raise ConfigError(
                f"config.data.crop_size={size} is too small for config.dis_n_layer="
                f"{config.dis_n_layer} and config.dis_num_scales={config.dis_num_scales}: the "
                "coarsest scale's map would be empty; use fewer layers or scales")

    # ----------------------------------------------------------------- build
    def _read_common(self, config: ml_collections.ConfigDict) -> Any:
        """Sets the domains' channels, the image size and the loss weights both archs read;
        returns the compute dtype config.dtype names (None: float32)."""
        if config.dtype not in COMPUTE_DTYPES:
            raise ValueError(f"unknown config.dtype {config.dtype!r}; expected one of {sorted(COMPUTE_DTYPES)}")
        self.channels = {"A": int(config.input_dim_a), "B": int(config.input_dim_b)}
        self.image_size = int(config.data.crop_size)
        self.w = {k: float(config[k]) for k in ("gan_w", "recon_x_w", "recon_kl_w",
                                                 "recon_x_cyc_w", "recon_kl_cyc_w")}
        return COMPUTE_DTYPES[config.dtype]

    def __init__(self, config: ml_collections.ConfigDict, steps_per_epoch: int = 1):
        del steps_per_epoch  # the reference's schedule counts iterations
        dtype = self._read_common(config)
        # The VGG perceptual loss: frozen VGG16 parameters, read once, carried in
        # state.buffers['vgg'] (a jit argument, not an executable constant; no optimizer state).
        self.w["vgg_w"] = float(config.get("vgg_w", 0.0))
        self.vgg = vgg.load_vgg16(config.vgg_model_path) if self.w["vgg_w"] > 0 else None
        # The seed's shared-weight form (NIPS-2017 version_02): the last `gen_shared_blocks`
        # residual blocks of the encoders and the first of the decoders, and the last
        # `dis_shared_layers` conv blocks (+ the 1x1 conv) of every D scale, stored once as
        # networks gen_shared / dis_shared. 0 and 0 is the reference master (no sharing).
        shared_g = int(config.get("gen_shared_blocks", 0))
        shared_d = int(config.get("dis_shared_layers", 0))
        self.shared = {"gen": shared_g, "dis": shared_d}
        latent = config.gen_dim * 2**config.gen_n_downsample
        gen = lambda nc: nets.VAEGen(nc, config.gen_dim, config.gen_n_downsample,
                                     config.gen_n_res - shared_g, config.gen_activ,
                                     config.gen_pad_type, dtype)
        dis = lambda part: nets.MsImageDis(
            config.dis_dim, config.dis_n_layer, config.dis_num_scales, config.dis_norm,
            config.dis_activ, config.dis_pad_type, dtype,
            part=part if shared_d else "all", n_shared=shared_d)
        self.modules = {"gen_a": gen(self.channels["A"]), "gen_b": gen(self.channels["B"]),
                        "dis_a": dis("front"), "dis_b": dis("front")}
        self.in_channels = {"gen_a": self.channels["A"], "gen_b": self.channels["B"],
                            "dis_a": self.channels["A"], "dis_b": self.channels["B"]}
        self.networks = ("gen_a", "gen_b") + (("gen_shared",) if shared_g else ()) + (
            "dis_a", "dis_b") + (("dis_shared",) if shared_d else ())
        self.groups = {"gen": tuple(n for n in self.networks if n.startswith("gen")),
                       "dis": tuple(n for n in self.networks if n.startswith("dis"))}
        if shared_g:
            self.modules["gen_shared"] = nets.SharedLatent(
                shared_g, latent, config.gen_activ, config.gen_pad_type, dtype)
        if shared_d:
            self.modules["dis_shared"] = dis("back")
        self.schedule = step_lr_schedule(config.lr, config.lr_policy, config.step_size, config.gamma)
        tx = adam_coupled_l2(self.schedule, config.beta1, config.beta2, config.weight_decay)
        self.tx = {"gen": tx, "dis": tx}
        self.size_multiple = 2**config.gen_n_downsample
        self.architecture = (f"VAEGen dim {config.gen_dim}, n_downsample {config.gen_n_downsample}, "
                             f"n_res {config.gen_n_res}")

    # ----------------------------------------------------------------- state
    def init_variables(self, key: Array) -> dict[str, Any]:
        """Fresh variables: kaiming convs in the generators, N(0, 0.02) in the discriminators."""
        out = {}
        for name, k in zip(self.networks, jax.random.split(key, len(self.networks))):
            x = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), self._example_input(name))
            out[name] = jax.jit(self.modules[name].init)(k, x)
        return out

    def _example_input(self, name: str) -> Any:
        """Shapes of a batch-1 input of network `name` (images; latents; D front features)."""
        size = self.image_size
        if name == "gen_shared":
            side = size // self.size_multiple
            return jax.ShapeDtypeStruct((1, side, side, self.modules[name].dim), jnp.float32)
        if name == "dis_shared":
            x = jax.ShapeDtypeStruct((1, size, size, self.channels["A"]), jnp.float32)
            front = self.modules["dis_a"]
            return jax.eval_shape(lambda x: front.apply(front.init(jax.random.key(0), x), x), x)
        return jax.ShapeDtypeStruct((1, size, size, self.in_channels[name]), jnp.float32)

    def state_from_variables(self, variables: Mapping[str, Any], key: Array) -> TrainState:
        """A step-0 TrainState around given network variables."""
        params = {n: variables[n]["params"] for n in self.networks}
        opt_state = {g: self.tx[g].init({n: params[n] for n in ns}) for g, ns in self.groups.items()}
        buffers = {}
        if self.vgg is not None:  # frozen, in the parameters' float type
            dtype = jax.tree.leaves(params)[0].dtype
            buffers["vgg"] = jax.tree.map(lambda x: jnp.asarray(x, dtype), self.vgg)
        return TrainState(jnp.zeros((), jnp.int32), params, {n: {} for n in self.networks},
                          opt_state, buffers, key)

    def create_state(self, key: Array) -> TrainState:
        init_key, state_key = jax.random.split(key)
        return self.state_from_variables(self.init_variables(init_key), state_key)

    # ----------------------------------------------------------------- passes
    def encode(self, name: str, params: Mapping[str, Any], x: Array) -> Array:
        """h of generator `name` (params: the networks' dict), through the shared blocks if any."""
        h = self.modules[name].apply({"params": params[name]}, x, method="encode")
        if self.shared["gen"]:
            h = self.modules["gen_shared"].apply({"params": params["gen_shared"]}, h, method="encode")
        return h

    def decode(self, name: str, params: Mapping[str, Any], z: Array) -> Array:
        """Decoder of generator `name` applied to z, after the shared blocks if any."""
        if self.shared["gen"]:
            z = self.modules["gen_shared"].apply({"params": params["gen_shared"]}, z, method="decode")
        return self.modules[name].apply({"params": params[name]}, z, method="decode")

    def discriminate(self, name: str, params: Mapping[str, Any], x: Array) -> tuple[Array, ...]:
        """Per-scale maps of discriminator `name`, through the shared high-level layers if any."""
        outs = self.modules[name].apply({"params": params[name]}, x)
        if self.shared["dis"]:
            outs = self.modules["dis_shared"].apply({"params": params["dis_shared"]}, outs)
        return outs

    # ----------------------------------------------------------------- losses
    def discriminator_loss(self, d_params: Mapping[str, Any], g_params: Mapping[str, Any],
                           batch: Mapping[str, Array], noise: Mapping[str, Array] | Array
                           ) -> tuple[Array, dict[str, Any]]:
        """`dis_update`'s loss: gan_w * (dis_a(x_ba vs x_a) + dis_b(x_ab vs x_b)), fakes detached."""
        g = jax.lax.stop_gradient(g_params)
        x_a, x_b = batch["A"], batch["B"]
        h_a = self.encode("gen_a", g, x_a)
        h_b = self.encode("gen_b", g, x_b)
        z_a = h_a + _noise(noise, "n_a", DIS_NOISE, h_a)
        z_b = h_b + _noise(noise, "n_b", DIS_NOISE, h_b)
        x_ba = jax.lax.stop_gradient(self.decode("gen_a", g, z_b))
        x_ab = jax.lax.stop_gradient(self.decode("gen_b", g, z_a))
        terms = {}
        for d, fake, real in (("dis_a", x_ba, x_a), ("dis_b", x_ab, x_b)):
            outs = self.discriminate(d, d_params, _cat(fake.astype(real.dtype), real))
            fake_outs, real_outs = zip(*(_halves(o) for o in outs))
            terms[d] = lsgan_dis_loss(fake_outs, real_outs)
        total = self.w["gan_w"] * terms["dis_a"] + self.w["gan_w"] * terms["dis_b"]
        return total, {"terms": terms}

    def generator_loss(self, g_params: Mapping[str, Any], d_params: Mapping[str, Any],
                       batch: Mapping[str, Array], noise: Mapping[str, Array] | Array,
                       vgg_params: Mapping[str, Any] | None = None) -> tuple[Array, dict[str, Any]]:
        """`gen_update`'s loss: reconstruction, KL, cycle and adversarial terms with their weights,
        plus vgg_w * (vgg(x_ba, x_b) + vgg(x_ab, x_a)) when vgg_w > 0 (`vgg_params` frozen)."""
        d = jax.lax.stop_gradient(d_params)
        x_a, x_b = batch["A"], batch["B"]
        h_a = self.encode("gen_a", g_params, x_a)
        h_b = self.encode("gen_b", g_params, x_b)
        z_a = h_a + _noise(noise, "n_a", GEN_NOISE, h_a)
        z_b = h_b + _noise(noise, "n_b", GEN_NOISE, h_b)
        x_a_recon, x_ba = _halves(self.decode("gen_a", g_params, _cat(z_a, z_b)))
        x_b_recon, x_ab = _halves(self.decode("gen_b", g_params, _cat(z_b, z_a)))
        h_b_recon = self.encode("gen_a", g_params, x_ba.astype(x_a.dtype))
        h_a_recon = self.encode("gen_b", g_params, x_ab.astype(x_b.dtype))
        z_a_recon = h_a_recon + _noise(noise, "n_a_recon", GEN_NOISE, h_a_recon)
        z_b_recon = h_b_recon + _noise(noise, "n_b_recon", GEN_NOISE, h_b_recon)
        x_aba = self.decode("gen_a", g_params, z_a_recon)
        x_bab = self.decode("gen_b", g_params, z_b_recon)
        l1 = lambda p, t: jnp.mean(jnp.abs(p - t))
        kl = lambda h: jnp.mean(jnp.square(h.astype(jnp.promote_types(h.dtype, jnp.float32))))
        t = {
            "recon_x_a": l1(x_a_recon, x_a), "recon_x_b": l1(x_b_recon, x_b),
            "recon_kl_a": kl(h_a), "recon_kl_b": kl(h_b),
            "cyc_x_a": l1(x_aba, x_a), "cyc_x_b": l1(x_bab, x_b),
            "recon_kl_cyc_aba": kl(h_a_recon), "recon_kl_cyc_bab": kl(h_b_recon),
            "adv_a": lsgan_gen_loss(self.discriminate("dis_a", d, x_ba.astype(x_a.dtype))),
            "adv_b": lsgan_gen_loss(self.discriminate("dis_b", d, x_ab.astype(x_b.dtype))),
        }
        w = self.w
        total = (w["gan_w"] * (t["adv_a"] + t["adv_b"])
                 + w["recon_x_w"] * (t["recon_x_a"] + t["recon_x_b"])
                 + w["recon_kl_w"] * (t["recon_kl_a"] + t["recon_kl_b"])
                 + w["recon_x_cyc_w"] * (t["cyc_x_a"] + t["cyc_x_b"])
                 + w["recon_kl_cyc_w"] * (t["recon_kl_cyc_aba"] + t["recon_kl_cyc_bab"]))
        if w.get("vgg_w", 0) > 0:
            frozen = jax.lax.stop_gradient(vgg_params)
            t["vgg_a"] = vgg.vgg_loss(frozen, x_ba.astype(x_a.dtype), x_b)
            t["vgg_b"] = vgg.vgg_loss(frozen, x_ab.astype(x_b.dtype), x_a)
            total = total + w["vgg_w"] * t["vgg_a"] + w["vgg_w"] * t["vgg_b"]
        images = {"x_ab": x_ab, "x_ba": x_ba, "x_a_recon": x_a_recon, "x_b_recon": x_b_recon}
        return total, {"terms": t, "images": images}

    # ----------------------------------------------------------------- step
    def train_step(self, state: TrainState, batch: Mapping[str, Array],
                   noise: Mapping[str, Mapping[str, Array]] | None = None
                   ) -> tuple[TrainState, dict[str, Array]]:
        """One reference iteration: D update, then G update against the updated D (same pair).

        The encoders' noise is drawn from `state.key`; tests may inject it as
        `noise={'dis': {n_a, n_b}, 'gen': {n_a, n_b, n_a_recon, n_b_recon}}`.
        """
        next_key, dis_key, gen_key = jax.random.split(state.key, 3)
        if noise is not None:
            dis_key, gen_key = noise["dis"], noise["gen"]
        g_params = {n: state.params[n] for n in self.groups["gen"]}
        d_params = {n: state.params[n] for n in self.groups["dis"]}
        (d_loss, d_aux), d_grads = jax.value_and_grad(self.discriminator_loss, has_aux=True)(
            d_params, g_params, batch, dis_key)
        new_d, d_opt = apply_group_update(self.tx["dis"], state.opt_state["dis"], d_params, d_grads)
        (g_loss, g_aux), g_grads = jax.value_and_grad(self.generator_loss, has_aux=True)(
            g_params, new_d, batch, gen_key, state.buffers.get("vgg"))
        new_g, g_opt = apply_group_update(self.tx["gen"], state.opt_state["gen"], g_params, g_grads)
        metrics = {**g_aux["terms"], **d_aux["terms"], "G": g_loss, "D": d_loss,
                   "lr": jnp.asarray(self.schedule(state.step), jnp.float32)}
        new_state = state.replace(step=state.step + 1, params={**new_g, **new_d},
                                  opt_state={"gen": g_opt, "dis": d_opt}, key=next_key)
        return new_state, metrics

    # ----------------------------------------------------------------- inference
    def resolve_request(self, request: TranslationRequest) -> TranslationRequest:
        """The request with its direction: --direction, or --target=B (AtoB) / A (BtoA)."""
        return resolve_two_domains(request, self.name)

    @staticmethod
    def _pair(direction: str) -> tuple[str, str]:
        """(encoder network, decoder network) for a direction: AtoB is gen_a.encode, gen_b.decode."""
        return ("gen_a", "gen_b") if direction == "AtoB" else ("gen_b", "gen_a")

    def translation_channels(self, request: TranslationRequest) -> tuple[int, int]:
        enc, dec = self._pair(self.resolve_request(request).direction)
        return self.in_channels[enc], self.in_channels[dec]

    def describe(self, request: TranslationRequest) -> str:
        direction = self.resolve_request(request).direction
        enc, dec = self._pair(direction)
        in_nc, out_nc = self.translation_channels(request)
        return f"{enc}.encode -> {dec}.decode: {self.architecture}, {in_nc}->{out_nc} channels"

    def translate(self, params: Mapping[str, Any], images: Array,
                  request: str | TranslationRequest = "AtoB",
                  model_state: Mapping[str, Any] | None = None,
                  train: bool = False, key: Array | None = None) -> Array:
        """Deterministic translation as the reference's test.py: decode the mean h, no noise.

        UNIT has no BatchNorm or dropout, so `train` and `key` change nothing.
        """
        del model_state, train, key
        direction = request if isinstance(request, str) else self.resolve_request(request).direction
        enc, dec = self._pair(direction)
        return self.decode(dec, params, self.encode(enc, params, images))

    def visuals(self, params: Mapping[str, Any], batch: Mapping[str, Array],
                model_state: Mapping[str, Any] | None = None) -> dict[str, Array]:
        """x_a | x_a_recon | x_ab | x_b | x_b_recon | x_ba, all decoded without noise."""
        h_a = self.encode("gen_a", params, batch["A"])
        h_b = self.encode("gen_b", params, batch["B"])
        return {"x_a": batch["A"], "x_a_recon": self.decode("gen_a", params, h_a),
                "x_ab": self.decode("gen_b", params, h_a),
                "x_b": batch["B"], "x_b_recon": self.decode("gen_b", params, h_b),
                "x_ba": self.decode("gen_a", params, h_b)}

    # ----------------------------------------------------------------- weights
    def network_template(self, name: str) -> Any:
        """The shapes and dtypes of network `name`'s variables (nothing is computed)."""
        x = self._example_input(name)
        return jax.eval_shape(lambda x: self.modules[name].init(jax.random.key(0), x), x)

    def import_weights(self, path: str, names: tuple[str, ...]) -> dict[str, Any]:
        """{name: variables} from an official `gen_XXXXXXXX.pt` or `dis_XXXXXXXX.pt`.

        Both hold `{'a': state_dict, 'b': state_dict}`; a gen file serves gen_a/gen_b, a
        dis file dis_a/dis_b. Legacy PyTorch-0.3 InstanceNorm running statistics are
        dropped; any other key that does not fit is an error naming it.
        """
        if self.shared["gen"] or self.shared["dis"]:
            raise ValueError(f"{path}: official UNIT files hold unshared networks; set "
                             "config.gen_shared_blocks=0 and config.dis_shared_layers=0 to read them")
        pair = read_official_pair(path)
        kind = "gen" if any(k.startswith(("enc.", "dec.")) for k in pair["a"]) else "dis"
        allowed = tuple(f"{kind}_{d}" for d in "ab")
        wrong = [n for n in names if n not in allowed]
        if wrong or not names:
            raise ValueError(f"{path} is a {kind} file holding {', '.join(allowed)}: config."
                             f"init_networks must name those (got {','.join(names) or 'nothing'})")
        hint = ("check config.input_dim_a/b, gen_dim, gen_n_downsample, gen_n_res (dis_dim, "
                "dis_n_layer, dis_num_scales) against the yaml the file was trained with")
        return {n: torch_io.from_state_dict(pair[n[-1]], self.network_template(n),
                                            source=f"{path}['{n[-1]}']", hint=hint) for n in names}

    def load_official(self, path: str, request: TranslationRequest
                      ) -> tuple[dict[str, Any], dict[str, Any], TranslationRequest]:
        """(params, model_state, request served) from an official `gen_XXXXXXXX.pt`: both directions."""
        served = self.resolve_request(request)
        variables = self.import_weights(path, ("gen_a", "gen_b"))
        params = {n: v["params"] for n, v in variables.items()}
        return params, {n: {} for n in params}, served

    def official_pair(self, params: Mapping[str, Any], kind: str = "gen") -> dict[str, dict[str, np.ndarray]]:
        """`{'a': state_dict, 'b': state_dict}` as `UNIT_Trainer.save` writes for `kind` gen or dis."""
        return {d: torch_io.to_state_dict({"params": params[f"{kind}_{d}"]}) for d in "ab"}

    def export_official(self, params: Mapping[str, Any], model_state: Mapping[str, Any],
                        path: str) -> list[str]:
        """`gen.pt` and `dis.pt` under folder `path`, each `{'a': ..., 'b': ...}` as the
        reference's `gen_XXXXXXXX.pt` / `dis_XXXXXXXX.pt` (the `unpaired.export` hook)."""
        import os  # pylint: disable=import-outside-toplevel

        from unpaired.weights import write_torch_dicts  # pylint: disable=import-outside-toplevel

        del model_state  # UNIT's norms keep no statistics
        if self.shared["gen"] or self.shared["dis"]:
            raise ValueError("official UNIT files hold unshared networks: a run with "
                             "config.gen_shared_blocks or config.dis_shared_layers has no export")
        os.makedirs(path, exist_ok=True)
        written = []
        for kind in ("gen", "dis"):
            out = os.path.join(path, f"{kind}.pt")
            write_torch_dicts(self.official_pair(jax.device_get(params), kind), out)
            written.append(out)
        return written


def read_official_pair(path: str) -> dict[str, dict[str, np.ndarray]]:
    """The `{'a': ..., 'b': ...}` state_dicts of an official UNIT file, read without torch."""
    obj = read_torch_file(path)
    if not (isinstance(obj, Mapping) and set(obj) >= {"a", "b"}
            and all(isinstance(obj[d], Mapping) for d in "ab")):
        raise ValueError(f"{path} is not a UNIT gen/dis file: expected a dict with state_dicts "
                         f"'a' and 'b', found {type(obj).__name__}"
                         + (f" with keys {sorted(map(str, obj))[:8]}" if isinstance(obj, Mapping) else ""))
    return {d: {str(k): np.array(v, copy=True) for k, v in obj[d].items()} for d in "ab"}
