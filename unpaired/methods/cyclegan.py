"""CycleGAN (Zhu et al. 2017) as pure functions over a TrainState.

One `train_step` does what the reference's `optimize_parameters` does, in its order:
the four generator passes, a generator update with the discriminators frozen, then a
discriminator update on the pre-update fakes passed through the image pools. Both
updates live in one jitted function, so nothing is recomputed and nothing leaves the
device. Facts: `shared/reference/cyclegan.md` §3.
"""

from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from unpaired import layers, losses, pool, schedules, torch_io
from unpaired.config_checks import (
    ConfigError, check_at_least, check_choice, check_present,
)
from unpaired.data.spec import DataSpec
from unpaired.methods.translation import TranslationRequest, resolve_two_domains
from unpaired.nets import cyclegan as nets
from unpaired.state import TrainState, apply_group_update

Array = jax.Array
DIRECTIONS = ("AtoB", "BtoA")


COMPUTE_DTYPES = {"float32": None, "bfloat16": jnp.bfloat16}


def _dtype(name: str) -> Any:
    """Layer compute dtype: None (follow inputs and float32 params) or bfloat16."""
    if name not in COMPUTE_DTYPES:
        raise ValueError(f"unknown config.dtype {name!r}; expected one of {sorted(COMPUTE_DTYPES)}")
    return COMPUTE_DTYPES[name]


def _concat(first: Array, second: Array) -> Array:
    """Two equal-shaped batches as one, interleaved sample by sample (see `fuse_passes`).

    Interleaving keeps each device's shard of a data-parallel batch on that device,
    where `concatenate` would move half of every shard.
    """
    both = jnp.stack([first, second], axis=1)
    return both.reshape((-1,) + first.shape[1:])


def _split(both: Array) -> tuple[Array, Array]:
    """The two batches of a `_concat` pass's output."""
    pairs = both.reshape((-1, 2) + both.shape[1:])
    return pairs[:, 0], pairs[:, 1]


class _Runner:
    """Applies networks in order while threading their BatchNorm statistics.

    The reference runs every network in train mode, so each forward pass updates the
    running statistics, in call order; this records the same sequence functionally.
    """

    def __init__(self, modules: Mapping[str, nn.Module], model_state: Mapping[str, Any],
                 key: Array | None, train: bool):
        self.modules = modules
        self.model_state = dict(model_state)
        self.key = key
        self.calls = 0
        self.train = train

    def __call__(self, name: str, params: Any, x: Array) -> Array:
        variables = {"params": params}
        stats = self.model_state.get(name)
        if stats:
            variables["batch_stats"] = stats
        rngs = {}
        if self.key is not None:
            rngs["dropout"] = jax.random.fold_in(self.key, self.calls)
        self.calls += 1
        module = self.modules[name]
        if stats and self.train:
            y, updated = module.apply(variables, x, True, rngs=rngs, mutable=["batch_stats"])
            self.model_state[name] = updated["batch_stats"]
            return y
        return module.apply(variables, x, self.train, rngs=rngs)


class CycleGAN:
    """The CycleGAN method: networks G_A (A->B), G_B (B->A), D_A (judges B), D_B (judges A)."""

    name = "cyclegan"
    networks = ("G_A", "G_B", "D_A", "D_B")
    visual_names = ("real_A", "fake_B", "rec_A", "real_B", "fake_A", "rec_B")
    groups = {"G": ("G_A", "G_B"), "D": ("D_A", "D_B")}

    @classmethod
    def required_init(cls, config: ml_collections.ConfigDict) -> tuple[str, ...]:
        """Networks that must come from config.init_from: none, CycleGAN trains in one stage."""
        return ()

    @classmethod
    def data_spec(cls, config: ml_collections.ConfigDict) -> DataSpec:
        """Two unlabelled domains: A with input_nc channels, B with output_nc."""
        return DataSpec(domains=("A", "B"), channels={"A": config.input_nc, "B": config.output_nc})

    @classmethod
    def validate_config(cls, config: ml_collections.ConfigDict) -> None:
        """Raises ConfigError naming the first CycleGAN key whose value cannot work.

        Called by `config_validation.validate` after the generic and data checks.
        """
        check_present(config, ("netG", "netD", "norm", "gan_mode", "lr_policy"))
        check_choice(config, "netG", nets.GENERATORS)
        check_choice(config, "netD", nets.DISCRIMINATORS)
        check_choice(config, "norm", layers.NORMS)
        check_choice(config, "gan_mode", losses.GAN_MODES)
        check_choice(config, "lr_policy", schedules.LR_POLICIES)
        if "init_type" in config:
            check_choice(config, "init_type", layers.INIT_TYPES)
        for key in ("input_nc", "output_nc", "ngf", "ndf", "n_layers_D", "lr_decay_iters"):
            check_at_least(config, key, 1)
        for key in ("lambda_A", "lambda_B", "lambda_identity", "gp_weight", "pool_size",
                    "init_gain"):
            check_at_least(config, key, 0)
        if not config.lr > 0:
            raise ConfigError(f"config.lr={config.lr!r} must be > 0")
        for key in ("beta1", "beta2"):
            if not 0 <= config[key] < 1:
                raise ConfigError(f"config.{key}={config[key]!r} must be in [0, 1)")
        if config.lambda_identity > 0 and config.input_nc != config.output_nc:
            raise ConfigError(
                f"config.lambda_identity={config.lambda_identity} needs config.input_nc == "
                f"config.output_nc (got {config.input_nc} and {config.output_nc}); "
                "set --config.lambda_identity=0"
            )
        data = config.data
        multiple = nets.SIZE_MULTIPLES[config.netG]
        if data.crop_size % multiple:
            raise ConfigError(
                f"config.data.crop_size={data.crop_size} must be a multiple of {multiple} for "
                f"config.netG={config.netG!r}, or the generator's output size differs from its input"
            )
        if nets.discriminator_output_size(config.netD, config.n_layers_D, data.crop_size) < 1:
            raise ConfigError(
                f"config.data.crop_size={data.crop_size} is too small for config.netD="
                f"{config.netD!r} (n_layers_D={config.n_layers_D}): its logit map would be empty; "
                "use larger images or fewer discriminator layers"
            )
        if (data.source in ("digits", "idx") and data.preprocess == "none"
                and data.image_size % multiple):
            raise ConfigError(
                f"config.data.image_size={data.image_size} must be a multiple of {multiple} for "
                f"config.netG={config.netG!r}"
            )

    def __init__(self, config: ml_collections.ConfigDict, steps_per_epoch: int = 1):
        self.input_nc = config.input_nc
        self.output_nc = config.output_nc
        self.image_size = config.data.crop_size
        self.gan_mode = config.gan_mode
        self.lambda_A = float(config.lambda_A)
        self.lambda_B = float(config.lambda_B)
        self.lambda_identity = float(config.lambda_identity)
        self.gp_weight = float(config.gp_weight) if config.gan_mode == "wgangp" else 0.0
        self.pool_size = int(config.pool_size)
        # One forward pass per network over images that the reference passes separately
        # (G_A on real_A and real_B, D on real and fake): the same per-sample values, since
        # InstanceNorm and the convs act per sample, in half the passes. BatchNorm mixes
        # samples and dropout draws masks per call, so those keep separate passes.
        self.fuse_passes = bool(config.get("fuse_passes", True)) and (
            config.norm != "batch" and config.no_dropout
        )
        dtype = _dtype(config.dtype)
        init_type = config.get("init_type", "normal")  # configs saved before it existed
        make_G = lambda out_nc: nets.define_G(
            config.netG, out_nc, config.ngf, config.norm, not config.no_dropout,
            config.init_gain, dtype, remat=config.remat, init_type=init_type,
        )
        make_D = lambda: nets.define_D(
            config.netD, config.ndf, config.n_layers_D, config.norm, config.init_gain, dtype,
            init_type=init_type,
        )
        self.modules = {
            "G_A": make_G(self.output_nc), "G_B": make_G(self.input_nc),
            "D_A": make_D(), "D_B": make_D(),
        }
        self.in_channels = {
            "G_A": self.input_nc, "G_B": self.output_nc,
            "D_A": self.output_nc, "D_B": self.input_nc,
        }
        schedule = schedules.epoch_schedule(
            config.lr, policy=config.lr_policy, steps_per_epoch=steps_per_epoch,
            n_epochs=config.n_epochs, n_epochs_decay=config.n_epochs_decay,
            epoch_count=config.epoch_count, lr_decay_iters=config.lr_decay_iters,
        )
        self.schedule = schedule
        tx = schedules.adam(schedule, config.beta1, config.beta2)
        self.tx = {"G": tx, "D": tx}
        # Translate hooks: what generator input sides must be multiples of, and a summary.
        self.size_multiple = nets.SIZE_MULTIPLES[config.netG]
        self.architecture = f"{config.netG}, ngf {config.ngf}, norm {config.norm}"

    # ----------------------------------------------------------------- state
    def init_variables(self, key: Array) -> dict[str, Any]:
        """Fresh variables ({'params': ..., maybe 'batch_stats': ...}) for every network."""
        out = {}
        for name, k in zip(self.networks, jax.random.split(key, len(self.networks))):
            x = jnp.zeros((1, self.image_size, self.image_size, self.in_channels[name]))
            out[name] = jax.jit(self.modules[name].init, static_argnums=2)(k, x, False)
        return out

    def state_from_variables(self, variables: Mapping[str, Any], key: Array) -> TrainState:
        """A step-0 TrainState around given network variables (fresh or loaded from torch)."""
        params = {n: variables[n]["params"] for n in self.networks}
        model_state = {n: variables[n].get("batch_stats", {}) for n in self.networks}
        opt_state = {g: self.tx[g].init({n: params[n] for n in nets_}) for g, nets_ in self.groups.items()}
        shape = (self.image_size, self.image_size)
        buffers = {
            "fake_A": pool.init_pool(self.pool_size, shape + (self.input_nc,)),
            "fake_B": pool.init_pool(self.pool_size, shape + (self.output_nc,)),
        }
        return TrainState(jnp.zeros((), jnp.int32), params, model_state, opt_state, buffers, key)

    def create_state(self, key: Array) -> TrainState:
        """Initialises every network with the reference's `init_weights(init_type, init_gain)`."""
        init_key, state_key = jax.random.split(key)
        return self.state_from_variables(self.init_variables(init_key), state_key)

    # ----------------------------------------------------------------- losses
    def generator_loss(
        self, g_params: Mapping[str, Any], d_params: Mapping[str, Any],
        model_state: Mapping[str, Any], batch: Mapping[str, Array], key: Array | None,
    ) -> tuple[Array, dict[str, Any]]:
        """The reference's `forward` + `backward_G` loss; aux holds terms, fakes, new stats."""
        run = _Runner(self.modules, model_state, key, train=True)
        real_A, real_B = batch["A"], batch["B"]
        terms = {}
        if self.lambda_identity > 0 and self.fuse_passes:
            fake_B, idt_A = _split(run("G_A", g_params["G_A"], _concat(real_A, real_B)))
            fake_A, idt_B = _split(run("G_B", g_params["G_B"], _concat(real_B, real_A)))
            rec_A = run("G_B", g_params["G_B"], fake_B)
            rec_B = run("G_A", g_params["G_A"], fake_A)
        else:
            fake_B = run("G_A", g_params["G_A"], real_A)
            rec_A = run("G_B", g_params["G_B"], fake_B)
            fake_A = run("G_B", g_params["G_B"], real_B)
            rec_B = run("G_A", g_params["G_A"], fake_A)
            if self.lambda_identity > 0:
                idt_A = run("G_A", g_params["G_A"], real_B)
                idt_B = run("G_B", g_params["G_B"], real_A)
        if self.lambda_identity > 0:
            terms["idt_A"] = losses.l1_loss(idt_A, real_B) * self.lambda_B * self.lambda_identity
            terms["idt_B"] = losses.l1_loss(idt_B, real_A) * self.lambda_A * self.lambda_identity
        else:
            terms["idt_A"] = terms["idt_B"] = jnp.zeros((), jnp.float32)
        d_frozen = jax.lax.stop_gradient(d_params)
        adv = dict(gan_mode=self.gan_mode, for_discriminator=False)
        terms["G_A"] = losses.gan_loss(run("D_A", d_frozen["D_A"], fake_B), True, **adv)
        terms["G_B"] = losses.gan_loss(run("D_B", d_frozen["D_B"], fake_A), True, **adv)
        terms["cycle_A"] = losses.l1_loss(rec_A, real_A) * self.lambda_A
        terms["cycle_B"] = losses.l1_loss(rec_B, real_B) * self.lambda_B
        total = (terms["G_A"] + terms["G_B"] + terms["cycle_A"] + terms["cycle_B"]
                 + terms["idt_A"] + terms["idt_B"])
        fakes = {"fake_A": fake_A, "fake_B": fake_B, "rec_A": rec_A, "rec_B": rec_B}
        return total, {"terms": terms, "fakes": fakes, "model_state": run.model_state}

    def discriminator_loss(
        self, d_params: Mapping[str, Any], model_state: Mapping[str, Any],
        batch: Mapping[str, Array], fake_A: Array, fake_B: Array, key: Array | None,
    ) -> tuple[Array, dict[str, Any]]:
        """`backward_D_A` + `backward_D_B`: 0.5 (D(real)->1 + D(fake)->0) each, plus WGAN-GP.

        The penalty (gan_mode wgangp, gp_weight > 0) evaluates D in eval mode, so with
        BatchNorm discriminators it neither uses nor updates batch statistics.
        """
        run = _Runner(self.modules, model_state, None, train=True)
        fake_A = jax.lax.stop_gradient(fake_A)
        fake_B = jax.lax.stop_gradient(fake_B)
        terms = {}
        for d_name, real, fake in (("D_A", batch["B"], fake_B), ("D_B", batch["A"], fake_A)):
            if self.fuse_passes:
                real_logits, fake_logits = _split(run(d_name, d_params[d_name], _concat(real, fake)))
            else:
                real_logits = run(d_name, d_params[d_name], real)
                fake_logits = run(d_name, d_params[d_name], fake)
            terms[d_name] = losses.discriminator_loss(real_logits, fake_logits, self.gan_mode)
            if self.gp_weight > 0:
                key, alpha_key = jax.random.split(key)
                alpha = jax.random.uniform(alpha_key, (real.shape[0],))
                disc = lambda x, n=d_name: self.modules[n].apply(
                    {"params": d_params[n], **({"batch_stats": run.model_state[n]}
                                               if run.model_state.get(n) else {})}, x, False)
                terms[f"gp_{d_name}"] = losses.gradient_penalty(
                    disc, real, fake, alpha, weight=self.gp_weight)
                terms[d_name] = terms[d_name] + terms[f"gp_{d_name}"]
        return terms["D_A"] + terms["D_B"], {"terms": terms, "model_state": run.model_state}

    # ----------------------------------------------------------------- step
    @staticmethod
    def step_keys(key: Array) -> dict[str, Array]:
        """The per-step keys split from state.key: next state key, G dropout, pools, D penalty."""
        names = ("next", "G", "pool_B", "pool_A", "D")
        return dict(zip(names, jax.random.split(key, len(names))))

    def train_step(self, state: TrainState, batch: Mapping[str, Array]) -> tuple[TrainState, dict[str, Array]]:
        """One reference iteration: G update (D frozen), then D update on pooled pre-update fakes."""
        if self.lambda_identity > 0 and self.input_nc != self.output_nc:  # checked when traced,
            raise ValueError(  # so that translating with a 1->3 model needs no training keys
                "config.lambda_identity > 0 needs config.input_nc == config.output_nc "
                f"(got {self.input_nc} and {self.output_nc})"
            )
        keys = self.step_keys(state.key)
        g_params = {n: state.params[n] for n in self.groups["G"]}
        d_params = {n: state.params[n] for n in self.groups["D"]}
        (g_loss, g_aux), g_grads = jax.value_and_grad(self.generator_loss, has_aux=True)(
            g_params, d_params, state.model_state, batch, keys["G"])
        new_g, g_opt = apply_group_update(self.tx["G"], state.opt_state["G"], g_params, g_grads)

        fakes = g_aux["fakes"]
        pool_B, fake_B = pool.query(state.buffers["fake_B"], fakes["fake_B"], keys["pool_B"])
        pool_A, fake_A = pool.query(state.buffers["fake_A"], fakes["fake_A"], keys["pool_A"])
        (d_loss, d_aux), d_grads = jax.value_and_grad(self.discriminator_loss, has_aux=True)(
            d_params, g_aux["model_state"], batch, fake_A, fake_B, keys["D"])
        new_d, d_opt = apply_group_update(self.tx["D"], state.opt_state["D"], d_params, d_grads)

        terms = g_aux["terms"]
        metrics = dict(terms)
        metrics.update(d_aux["terms"])
        metrics["G"] = g_loss
        metrics["D"] = d_loss
        metrics["lr"] = jnp.asarray(self.schedule(state.step), jnp.float32)  # used by this step
        new_state = state.replace(
            step=state.step + 1,
            params={**new_g, **new_d},
            model_state=d_aux["model_state"],
            opt_state={"G": g_opt, "D": d_opt},
            buffers={"fake_A": pool_A, "fake_B": pool_B},
            key=keys["next"],
        )
        return new_state, metrics

    # ----------------------------------------------------------------- inference

    def resolve_request(self, request: TranslationRequest) -> TranslationRequest:
        """The request with its direction set: --direction, or --target=B (AtoB) / A (BtoA).

        A target is a domain name or index (A=0, B=1); it must agree with a direction
        given too. CycleGAN has no domain codes, so --code is refused.
        """
        return resolve_two_domains(request, self.name)

    @staticmethod
    def _generator(direction: str) -> str:
        if direction not in DIRECTIONS:
            raise ValueError(f"unknown direction {direction!r}; expected one of {DIRECTIONS}")
        return "G_A" if direction == "AtoB" else "G_B"

    def translation_channels(self, request: TranslationRequest) -> tuple[int, int]:
        """(input channels, output channels) of the generator that serves `request`."""
        name = self._generator(self.resolve_request(request).direction)
        return self.in_channels[name], self.output_nc if name == "G_A" else self.input_nc

    def describe(self, request: TranslationRequest) -> str:
        """The generator serving `request`, in words (for logs and the HTML page)."""
        name = self._generator(self.resolve_request(request).direction)
        in_nc, out_nc = self.translation_channels(request)
        return f"{name}: {self.architecture}, {in_nc}->{out_nc} channels"

    def translate(self, params: Mapping[str, Any], images: Array,
                  request: str | TranslationRequest = "AtoB",
                  model_state: Mapping[str, Any] | None = None,
                  train: bool = False, key: Array | None = None) -> Array:
        """G_A(images) for 'AtoB', G_B(images) for 'BtoA'; images in [-1, 1].

        `train=False` runs eval mode (running BatchNorm statistics, no dropout).
        `train=True` runs as the reference's test.py does without --eval: BatchNorm
        normalises with this batch's statistics (stored ones are left unchanged) and
        dropout is active with masks drawn from `key` (default: a fixed key).
        """
        direction = request if isinstance(request, str) else self.resolve_request(request).direction
        name = self._generator(direction)
        if train and key is None:
            key = jax.random.key(0)
        run = _Runner(self.modules, model_state or {}, key if train else None, train=train)
        return run(name, params[name], images)

    def network_template(self, name: str) -> Any:
        """The shapes and dtypes of network `name`'s variables (nothing is computed)."""
        size = self.size_multiple if name in self.groups["G"] else self.image_size
        x = jax.ShapeDtypeStruct((1, size, size, self.in_channels[name]), jnp.float32)
        return jax.eval_shape(lambda x: self.modules[name].init(jax.random.key(0), x, False), x)

    def import_weights(self, path: str, names: tuple[str, ...]) -> dict[str, Any]:
        """{name: variables} from a reference state_dict `.pth` holding one network.

        The reference saves each network to its own file (`latest_net_G_A.pth`), so a
        file initialises exactly one of G_A, G_B, D_A, D_B; keys and shapes are checked.
        """
        if len(names) != 1 or names[0] not in self.networks:
            raise ValueError(
                f"a .pth file holds one network: config.init_networks must name one of "
                f"{', '.join(self.networks)} (got {','.join(names) or 'nothing'})")
        template = self.network_template(names[0])
        return {names[0]: torch_io.from_state_dict(torch_io.load_pth(path), template, source=path)}

    def load_official(self, path: str, request: TranslationRequest
                      ) -> tuple[dict[str, Any], dict[str, Any], TranslationRequest]:
        """(params, model_state, request served) from an official generator `.pth`.

        The file holds one generator and no architecture (that comes from the config).
        As in the reference's test model, it maps input_nc to output_nc whatever the
        direction, so it is loaded as G_A and serves AtoB; a --target or --code that
        CycleGAN cannot serve is still refused.
        """
        self.resolve_request(request)
        variables = self.import_weights(path, ("G_A",))["G_A"]
        params = {"G_A": variables["params"]}
        model_state = {"G_A": variables.get("batch_stats", {})}
        return params, model_state, TranslationRequest(direction="AtoB")

    def visuals(self, params: Mapping[str, Any], batch: Mapping[str, Array],
                model_state: Mapping[str, Any] | None = None) -> dict[str, Array]:
        """real_A | fake_B | rec_A | real_B | fake_A | rec_B, the reference's visual names."""
        t = lambda x, d: self.translate(params, x, d, model_state)
        fake_B = t(batch["A"], "AtoB")
        fake_A = t(batch["B"], "BtoA")
        return {
            "real_A": batch["A"], "fake_B": fake_B, "rec_A": t(fake_B, "BtoA"),
            "real_B": batch["B"], "fake_A": fake_A, "rec_B": t(fake_A, "AtoB"),
        }
