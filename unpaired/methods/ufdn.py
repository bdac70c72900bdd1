"""UFDN (Liu et al. 2018): one encoder/decoder for N domains, a domain-adversarial latent.

`train_step` is one iteration of the official `train_face.py` (procedure 'translation'):
D_v on a detached sampled z, then D_x (WGAN critic + domain heads) with the per-pixel
gradient penalty, then one E/G Adam step on the sum of three losses, each with its own
forward pass and noise draw. Procedure 'uda' is `train_uda.py`: D_v, then E/G/D_digit with
the digit cross-entropy on labelled source samples. Facts: `shared/reference/ufdn.md` §4.

Batches: the data seam gives one batch per named domain (config.data.domains, in order).
The reference's mixed batch is their concatenation in that order, with one-hot codes
(domain k -> e_k); translation targets cycle: at step s, domain k goes to
(k + 1 + s mod (K-1)) mod K, which is the reference's forward/backward alternation for
K = 3 and "the other domain" for K = 2. All noise comes from `state.key` via `draw_noise`.

`config.objective` picks the adversarial and classification losses (same passes, noise,
weights and ramps; reconstruction + KL unchanged):
  'code'  (default) the official code: D_v and the D_x domain head use per-domain sigmoid
          BCE, E is pushed to the inverted code (BCE(D_v(z), 1 - v)), D_x is a WGAN critic
          with the per-pixel gradient penalty (lambdas.gp), G minimises -mean D_x(fake).
  'paper' the paper's equations with the seed post's sign corrections (ufdn.md 4.6):
          (2) D_v minimises -E[log P(v_c | z)] and (3) E minimises +E[log P(v_c | z)]
          (= -L_Dv, a true minimax) with a softmax over the domain logits; (4) D_x is a
          log-loss discriminator minimising E[log D(fake)] + E[log(1 - D(real))], D = sigmoid
          of the score head, no gradient penalty, and G minimises -E[log D(fake)];
          (5) the domain head is a softmax classifier, D_x minimising -E[log P(v_c | x_c)]
          on real images and G -E[log P(v_target | fake)]. Note that (3) and (4) as printed are
          unbounded below (E's and D_x's log terms can go to -inf), unlike the code's losses.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from unpaired import losses, schedules
from unpaired.config_checks import ConfigError, check_at_least, check_choice, check_present
from unpaired.data.spec import DataSpec
from unpaired.methods.translation import TranslationRequest
from unpaired.nets import ufdn as nets
from unpaired.state import TrainState, apply_group_update

Array = jax.Array
PROCEDURES = ("translation", "uda")
OBJECTIVES = ("code", "paper")
LAMBDAS = {"translation": ("pix_recon", "kl", "feat_domain", "gp", "pix_adv", "pix_clf"),
           "uda": ("pix_recon", "kl", "feat_domain")}
INTERPOLATION_STEPS = 5
NOISE = {"translation": ("eps_dv", "eps_dx", "alpha", "eps_rec", "eps_feat", "eps_pix",
                         "eps_unused"),
         "uda": ("eps_dv", "eps_rec", "eps_feat", "eps_digit")}


def ramp_table(init: float, final: float, steps: float) -> np.ndarray:
    """Values of a reference `trainer.lambda` ramp at iterations 0, 1, ... until it stops.

    The reference adds inc = (final - init) / steps after each iteration while
    inc * cur < inc * final, in Python floats; the last value holds from then on.
    """
    cur, final = float(init), float(final)
    inc = (final - cur) / float(steps)
    values = [cur]
    while inc * cur < inc * final:
        cur += inc
        values.append(cur)
    return np.asarray(values, np.float64)


def domain_codes(n: int) -> np.ndarray:
    """One-hot codes of n domains (rows), the reference's layout with r = 1."""
    return np.eye(n, dtype=np.float32)


def target_indices(step: Array, n: int) -> Array:
    """Target domain of each domain at `step`: (k + 1 + step mod (n-1)) mod n."""
    shift = 1 + jnp.mod(step, max(n - 1, 1))
    return jnp.mod(jnp.arange(n) + shift, n)


def pixelwise_gradient_penalty(critic, real: Array, fake: Array, alpha: Array) -> tuple[Array, Any]:
    """The reference's GP: mean over (n, h, w) of (||dD/dx||_2 over channels - 1)^2.

    `critic(points) -> (scores, aux)`; alpha has shape (N,). The norm's derivative at
    an all-zero gradient is taken as 0, as PyTorch's `norm` backward does.
    """
    a = alpha.reshape((-1, 1, 1, 1)).astype(real.dtype)
    points = a * real + (1 - a) * fake
    def summed(p: Array) -> tuple[Array, Any]:
        scores, aux = critic(p)
        return jnp.sum(scores), aux

    grads, aux = jax.grad(summed, has_aux=True)(points)
    sq = jnp.sum(jnp.square(grads), axis=-1)
    safe = jnp.where(sq > 0, sq, 1.0)
    norm = jnp.where(sq > 0, jnp.sqrt(safe), 0.0)
    return jnp.mean(jnp.square(norm - 1.0)), aux


def kl_sum(mu: Array, logvar: Array) -> Array:
    """-0.5 * sum(1 + logvar - mu^2 - exp(logvar)) over batch and latent dims."""
    return -0.5 * jnp.sum(1 + logvar - jnp.square(mu) - jnp.exp(logvar))


def cross_entropy_ignore(logits: Array, labels: Array) -> Array:
    """`nn.CrossEntropyLoss(ignore_index=-1)`: mean over samples with label != -1."""
    logp = jax.nn.log_softmax(logits.astype(jnp.promote_types(logits.dtype, jnp.float32)))
    valid = labels >= 0
    picked = jnp.take_along_axis(logp, jnp.where(valid, labels, 0)[:, None], axis=1)[:, 0]
    return -jnp.sum(jnp.where(valid, picked, 0.0)) / jnp.maximum(jnp.sum(valid), 1)


def softmax_cross_entropy(logits: Array, target: Array) -> Array:
    """-mean_n sum_k target_nk log softmax(logits)_nk: the paper's -E[log P(l = v | .)]."""
    logp = jax.nn.log_softmax(logits.astype(jnp.promote_types(logits.dtype, jnp.float32)))
    return -jnp.mean(jnp.sum(target * logp, axis=-1))


def log_sigmoid_mean(scores: Array) -> Array:
    """mean log sigmoid(scores): E[log D(.)] of a log-loss discriminator D = sigmoid(score)."""
    return jnp.mean(jax.nn.log_sigmoid(scores.astype(jnp.promote_types(scores.dtype, jnp.float32))))


class Objective:
    """The adversarial and classification losses of `config.objective` ('code' or 'paper')."""

    def __init__(self, name: str):
        if name not in OBJECTIVES:
            raise ValueError(f"unknown UFDN objective {name!r}; expected one of {OBJECTIVES}")
        self.name = name
        self.paper = name == "paper"

    def domain_loss(self, logits: Array, code: Array) -> Array:
        """A classifier's loss for `code` (D_v, the D_x domain head, G's target term)."""
        if self.paper:
            return softmax_cross_entropy(logits, code)
        return losses.bce_with_logits(logits, code)

    def encoder_adversarial(self, logits: Array, code: Array) -> Array:
        """E's latent term: BCE to the inverted code (code) or +E[log P(v_c | z)] (paper)."""
        if self.paper:
            return -softmax_cross_entropy(logits, code)
        return losses.bce_with_logits(logits, 1 - code)

    def critic_terms(self, s_real: Array, s_fake: Array) -> tuple[Array, Array]:
        """(real, fake) parts of D_x's adversarial loss: WGAN (code) or eq. (4) (paper)."""
        if self.paper:
            return log_sigmoid_mean(-s_real), log_sigmoid_mean(s_fake)
        return -jnp.mean(s_real), jnp.mean(s_fake)

    def generator_adversarial(self, s_fake: Array) -> Array:
        """G's unweighted pixel adversarial term: -mean D(fake) or -E[log D(fake)]."""
        if self.paper:
            return -log_sigmoid_mean(s_fake)
        return -jnp.mean(s_fake)


class _Nets:
    """Applies networks while threading their BatchNorm statistics in call order."""

    def __init__(self, modules: Mapping[str, Any], model_state: Mapping[str, Any], train: bool):
        self.modules = modules
        self.model_state = dict(model_state)
        self.train = train

    def __call__(self, name: str, params: Any, *args: Any, **kwargs: Any) -> Any:
        variables = {"params": params}
        stats = self.model_state.get(name)
        if stats:
            variables["batch_stats"] = stats
        module = self.modules[name]
        if stats and self.train:
            out, updated = module.apply(variables, *args, train=True, mutable=["batch_stats"],
                                        **kwargs)
            self.model_state[name] = updated["batch_stats"]
            return out
        return module.apply(variables, *args, train=self.train, **kwargs)


class UFDN:
    """UFDN: `vae` (E + G), `D_feat` (D_v), and `D_pix` (D_x) or `D_digit` (procedure uda)."""

    name = "ufdn"

    @classmethod
    def domains_of(cls, config: ml_collections.ConfigDict) -> tuple[str, ...]:
        """The domain names, in code order, from config.data.domains."""
        return tuple(d.strip() for d in str(config.data.domains).split(",") if d.strip())

    @classmethod
    def required_init(cls, config: ml_collections.ConfigDict) -> tuple[str, ...]:
        """UFDN trains in one stage: nothing must come from config.init_from."""
        return ()

    @classmethod
    def data_spec(cls, config: ml_collections.ConfigDict) -> DataSpec:
        """N domains of img_depth channels; uda needs the source (first) domain's labels."""
        domains = cls.domains_of(config)
        labels = domains[:1] if config.procedure == "uda" else ()
        return DataSpec(domains=domains, channels={d: config.img_depth for d in domains},
                        labels=labels)

    @classmethod
    def validate_config(cls, config: ml_collections.ConfigDict) -> None:
        """Raises ConfigError naming the first UFDN key whose value cannot work."""
        check_present(config, ("procedure", "encoder", "decoder", "D_feat", "lambdas", "lr"))
        check_choice(config, "procedure", PROCEDURES)
        if "objective" in config:
            check_choice(config, "objective", OBJECTIVES)
        domains = cls.domains_of(config)
        if len(domains) < 2:
            raise ConfigError(f"config.data.domains={config.data.domains!r} must name >= 2 domains")
        if config.procedure == "uda" and len(domains) != 2:
            raise ConfigError(f"config.data.domains={config.data.domains!r}: procedure uda "
                              "takes exactly 2 domains (source, target)")
        check_at_least(config, "img_depth", 1)
        for key in ("encoder", "decoder", "D_feat") + (
                ("D_pix",) if config.procedure == "translation" else ("D_digit",)):
            specs = config[key]
            if not specs:
                raise ConfigError(f"config.{key} must list at least one layer")
            for i, spec in enumerate(specs):
                if spec[0] not in ("conv", "fc"):
                    raise ConfigError(f"config.{key}[{i}][0]={spec[0]!r} must be 'conv' or 'fc'")
                norm, act = (spec[5], spec[6]) if spec[0] == "conv" else (spec[2], spec[3])
                if norm not in nets.NORMS:
                    raise ConfigError(f"config.{key}[{i}] norm {norm!r} must be 'bn' or ''")
                if act not in nets.ACTIVATIONS:
                    raise ConfigError(f"config.{key}[{i}] activation {act!r} must be one of "
                                      f"{nets.ACTIVATIONS}")
        if not any(len(s) > 7 and s[7] for s in config.decoder):
            raise ConfigError("config.decoder: no layer inserts the domain code (8th entry True)")
        if config.decoder[-1][1] != config.img_depth:
            raise ConfigError(f"config.decoder[-1] outputs {config.decoder[-1][1]} channels but "
                              f"config.img_depth={config.img_depth}")
        for name in LAMBDAS[config.procedure]:
            if name not in config.lambdas:
                raise ConfigError(f"config.lambdas.{name} is missing: give (init, final, steps)")
            init, final, steps = config.lambdas[name]
            if not steps > 0:
                raise ConfigError(f"config.lambdas.{name}={tuple(config.lambdas[name])}: "
                                  "steps must be > 0")
        if "eval_batch_size" in config:
            check_at_least(config, "eval_batch_size", 1)
        if not config.lr > 0:
            raise ConfigError(f"config.lr={config.lr!r} must be > 0")
        cls._lr(config)  # an unknown lr_schedule is named here
        for key in ("beta1", "beta2"):
            if not 0 <= config[key] < 1:
                raise ConfigError(f"config.{key}={config[key]!r} must be in [0, 1)")
        size = config.data.image_size
        n_down = len(config.encoder)
        if size % (2 ** n_down) or size // 2 ** n_down != 1:
            raise ConfigError(f"config.data.image_size={size} must be 2^{n_down} so the "
                              f"{n_down} k4 s2 p1 encoder convs reach a 1x1 latent")

    @staticmethod
    def _lr(config: ml_collections.ConfigDict) -> float | optax.Schedule:
        """The reference's constant rate, or (config.lr_schedule='cosine', opt-in) a cosine decay
        to 0 over max_steps, which steadies a short run's last steps (docs/quality.md D4)."""
        kind = config.get("lr_schedule", "constant")
        if kind == "cosine" and not int(config.max_steps) > 0:
            raise ConfigError(f"config.lr_schedule='cosine' decays over max_steps: set "
                              f"config.max_steps > 0 (it is {config.max_steps})")
        return schedules.constant_or_cosine(kind, config.lr, int(config.max_steps))

    def __init__(self, config: ml_collections.ConfigDict, steps_per_epoch: int = 1):
        del steps_per_epoch  # counted in max_steps (the reference has no schedule)
        self.config = config
        self.procedure = config.procedure
        if self.procedure == "uda":  # the optional seam: only uda trains a digit classifier (D_digit)
            self.digit_accuracy = self._digit_accuracy
        self.objective = Objective(config.get("objective", "code"))
        self.domains = self.domains_of(config)
        self.n_domains = len(self.domains)
        self.img_depth = int(config.img_depth)
        self.image_size = int(config.data.image_size)
        self.z_dim = int(config.encoder[-1][1])
        self.modules = {
            "vae": nets.UFDN(nets.freeze(list(config.encoder)), nets.freeze(list(config.decoder))),
            "D_feat": nets.Discriminator(nets.freeze(list(config.D_feat))),
        }
        if self.procedure == "translation":
            self.modules["D_pix"] = nets.Discriminator(nets.freeze(list(config.D_pix)))
        else:
            self.modules["D_digit"] = nets.Discriminator(nets.freeze(list(config.D_digit)))
        self.networks = tuple(self.modules)
        # Sample grid rows: per domain its inputs and their translations to every domain,
        # then the first domain's inputs decoded along codes from e_0 to e_{N-1}.
        self.visual_names = tuple(
            name for d in self.domains
            for name in [f"real_{d}"] + [f"{d}_to_{e}" for e in self.domains]
        ) + tuple(f"interp_{i}" for i in range(INTERPOLATION_STEPS))
        if self.procedure == "translation":
            self.groups = {"vae": ("vae",), "D_feat": ("D_feat",), "D_pix": ("D_pix",)}
        else:  # one Adam over the UFDN and the digit classifier, as train_uda.py builds it
            self.groups = {"vae": ("vae", "D_digit"), "D_feat": ("D_feat",)}
        lr = self._lr(config)
        self.tx = {g: optax.adam(lr, b1=config.beta1, b2=config.beta2, eps=1e-8) for g in self.groups}
        self.ramps = {n: ramp_table(*config.lambdas[n]) for n in LAMBDAS[self.procedure]}
        self.invert_augment = bool(config.get("data_augment", False))
        self.size_multiple = self.input_size = self.image_size  # the encoder ends in a fixed-size code
        self.architecture = (f"UFDN: {len(config.encoder)} encoder / {len(config.decoder)} "
                             f"decoder layers, z {self.z_dim}, {self.n_domains} domains")

    # ----------------------------------------------------------------- state
    def _example(self, name: str) -> tuple:
        n = 2
        if name == "vae":
            x = jnp.zeros((n, self.image_size, self.image_size, self.img_depth))
            return (x, jnp.zeros((n, self.n_domains)), jnp.zeros((n, self.z_dim)))
        if name == "D_pix":
            return (jnp.zeros((n, self.image_size, self.image_size, self.img_depth)),)
        return (jnp.zeros((n, self.z_dim)),)

    def init_variables(self, key: Array) -> dict[str, Any]:
        """Fresh variables per network (the reference's `weights_init`, see nets/ufdn.py)."""
        out = {}
        for name, k in zip(self.networks, jax.random.split(key, len(self.networks))):
            out[name] = jax.jit(lambda k, *a, n=name: self.modules[n].init(k, *a, train=False))(
                k, *self._example(name))
        return out

    def state_from_variables(self, variables: Mapping[str, Any], key: Array) -> TrainState:
        """A step-0 TrainState around given network variables."""
        params = {n: variables[n]["params"] for n in self.networks}
        model_state = {n: variables[n].get("batch_stats", {}) for n in self.networks}
        opt_state = {g: self.tx[g].init({n: params[n] for n in members})
                     for g, members in self.groups.items()}
        return TrainState(jnp.zeros((), jnp.int32), params, model_state, opt_state, {}, key)

    def create_state(self, key: Array) -> TrainState:
        """Initialises every network and the three (uda: two) Adam states."""
        init_key, state_key = jax.random.split(key)
        return self.state_from_variables(self.init_variables(init_key), state_key)

    def network_template(self, name: str) -> Any:
        """Shapes and dtypes of network `name`'s variables."""
        return jax.eval_shape(lambda: self.modules[name].init(
            jax.random.key(0), *self._example(name), train=False))

    # ----------------------------------------------------------------- official weights
    OFFICIAL_CLASSES = ("src.ufdn.UFDN", "src.ufdn.Discriminator")

    def import_weights(self, path: str, names: tuple[str, ...]) -> dict[str, Any]:
        """{name: variables} from an official whole pickled module (`vae`, `dnet`, `{step}.vae`).

        Read as data by `unpaired.weights` with stand-ins for the reference's classes (no
        pickled code runs); a `src.ufdn.UFDN` file initialises `vae`, a
        `src.ufdn.Discriminator` file the one discriminator named. BatchNorm
        `num_batches_tracked`, absent from files of PyTorch 0.4.0, is taken as 0.
        """
        from unpaired import torch_io  # pylint: disable=import-outside-toplevel
        from unpaired.weights import (  # pylint: disable=import-outside-toplevel
            ModuleStandIn, StandIns, module_state_dict, read_torch_file)

        obj = read_torch_file(path, stand_ins=StandIns(self.OFFICIAL_CLASSES))
        if not isinstance(obj, ModuleStandIn) or obj.torch_class not in self.OFFICIAL_CLASSES:
            raise ValueError(f"{path} holds {getattr(obj, 'torch_class', type(obj).__name__)}, "
                             f"not a pickled {' or '.join(self.OFFICIAL_CLASSES)}")
        is_vae = obj.torch_class == "src.ufdn.UFDN"
        if len(names) != 1 or (names[0] == "vae") != is_vae or names[0] not in self.networks:
            kind = "vae" if is_vae else f"one of {', '.join(n for n in self.networks if n != 'vae')}"
            raise ValueError(f"{path} holds a {obj.torch_class}: config.init_networks must name "
                             f"{kind} (got {','.join(names) or 'nothing'})")
        state_dict = dict(module_state_dict(obj))
        for key in list(state_dict):
            if key.endswith(".running_var"):
                tracked = key[: -len("running_var")] + "num_batches_tracked"
                state_dict.setdefault(tracked, np.zeros((), np.int64))
        template = self.network_template(names[0])
        return {names[0]: torch_io.from_state_dict(state_dict, template, source=path)}

    def load_official(self, path: str, request: TranslationRequest
                      ) -> tuple[dict[str, Any], dict[str, Any], TranslationRequest]:
        """(params, model_state, request) from an official pickled `vae`: any target or code."""
        resolved = self.resolve_request(request)
        variables = self.import_weights(path, ("vae",))["vae"]
        return ({"vae": variables["params"]}, {"vae": variables.get("batch_stats", {})},
                resolved)

    EXPORT_NAMES = {"vae": "vae.pth", "D_digit": "dnet.pth", "D_feat": "d_feat.pth",
                    "D_pix": "d_pix.pth"}

    def export_official(self, params: Mapping[str, Any], model_state: Mapping[str, Any],
                        path: str) -> list[str]:
        """Plain state_dicts under folder `path`, the reference's module names: `vae.pth`
        (UFDN), `dnet.pth` (uda's D_digit), `d_feat.pth`, `d_pix.pth`. Written without torch;
        `module.load_state_dict(torch.load(file))` takes them. Returns the files written."""
        from unpaired import torch_io  # pylint: disable=import-outside-toplevel

        os.makedirs(path, exist_ok=True)
        written = []
        for name in self.networks:
            variables = {"params": params[name]}
            if (model_state or {}).get(name):
                variables["batch_stats"] = model_state[name]
            out = os.path.join(path, self.EXPORT_NAMES[name])
            torch_io.save_pth(torch_io.to_state_dict(jax.device_get(variables)), out)
            written.append(out)
        return written

    # ----------------------------------------------------------------- batch
    def lambdas(self, step: Array) -> dict[str, Array]:
        """The loss weights the reference uses at iteration `step` (0-based)."""
        out = {}
        for name, table in self.ramps.items():
            index = jnp.minimum(step, len(table) - 1)
            out[name] = jnp.asarray(table)[index]
        return out

    def mixed_batch(self, batch: Mapping[str, Array], step: Array) -> dict[str, Array]:
        """x (concatenated domains), v (their codes), t (translation targets), labels."""
        sizes = [batch[d].shape[0] for d in self.domains]
        x = jnp.concatenate([batch[d] for d in self.domains], axis=0)
        codes = jnp.asarray(domain_codes(self.n_domains), x.dtype)
        owner = np.repeat(np.arange(self.n_domains), sizes)
        v = codes[owner]
        t = codes[target_indices(step, self.n_domains)[owner]]
        out = {"x": x, "v": v, "t": t}
        if self.procedure == "uda":
            source = self.domains[0]
            labels = [batch[DataSpec.label_key(source)].astype(jnp.int32)]
            labels += [jnp.full((s,), -1, jnp.int32) for s in sizes[1:]]
            out["labels"] = jnp.concatenate(labels)
            if self.invert_augment:
                # train_uda.py: 1-channel data inverted on odd steps (x -> 1 - x on [0, 1],
                # i.e. -x on [-1, 1]); our images are already scaled.
                out["x"] = jnp.where(jnp.mod(step, 2) == 1, -x, x)
        return out

    def draw_noise(self, key: Array, n: int, dtype: Any = jnp.float32) -> dict[str, Array]:
        """Every random draw of one iteration: eps (n, z) per UFDN pass, alpha (n,) for the GP."""
        names = NOISE[self.procedure]
        out = {}
        for name, k in zip(names, jax.random.split(key, len(names))):
            if name == "alpha":
                out[name] = jax.random.uniform(k, (n,), dtype)
            else:
                out[name] = jax.random.normal(k, (n, self.z_dim), dtype)
        return out

    # ----------------------------------------------------------------- losses
    def d_feat_loss(self, params: Any, model_state: Mapping[str, Any], z: Array, v: Array
                    ) -> tuple[Array, dict[str, Any]]:
        """D_v's domain loss on a detached sampled z: BCE(D_v(z), v) (code) or eq. (2) (paper)."""
        run = _Nets(self.modules, model_state, True)
        loss = self.objective.domain_loss(run("D_feat", params, jax.lax.stop_gradient(z)), v)
        return loss, {"model_state": run.model_state}

    def d_pix_loss(self, params: Any, model_state: Mapping[str, Any], x: Array, x_fake: Array,
                   v: Array, alpha: Array, lam_gp: Array) -> tuple[Array, dict[str, Any]]:
        """code: BCE(c(x), v) + mean D(fake) - mean D(real) + lambda_gp * GP_pixelwise;
        paper: CE(c(x), v) + E[log D(fake)] + E[log(1 - D(real))], no penalty."""
        run = _Nets(self.modules, model_state, True)
        x_fake = jax.lax.stop_gradient(x_fake)
        s_real, c_real = run("D_pix", params, x)
        s_fake, _ = run("D_pix", params, x_fake)
        real, fake = self.objective.critic_terms(s_real, s_fake)
        terms = {"Dx_clf": self.objective.domain_loss(c_real, v), "Dx_real": real,
                 "Dx_fake": fake}
        if self.objective.paper:
            total = terms["Dx_clf"] + terms["Dx_fake"] + terms["Dx_real"]
            return total, {"terms": terms, "model_state": run.model_state}

        def critic(points):
            inner = _Nets(self.modules, run.model_state, True)
            scores = inner("D_pix", params, points)[0]
            return scores, inner.model_state

        gp, stats = pixelwise_gradient_penalty(critic, x, x_fake, alpha)
        run.model_state = stats
        terms["gp"] = gp
        total = terms["Dx_clf"] + terms["Dx_fake"] + terms["Dx_real"] + lam_gp * gp
        return total, {"terms": terms, "model_state": run.model_state}

    def vae_loss(self, params: Any, others: Mapping[str, Any], model_state: Mapping[str, Any],
                 mixed: Mapping[str, Array], noise: Mapping[str, Array],
                 lam: Mapping[str, Array]) -> tuple[Array, dict[str, Any]]:
        """Reconstruction + KL, latent adversarial, pixel adversarial + clf (`config.objective`).

        `params` holds the vae (and uda's D_digit); `others` the updated discriminators,
        held fixed. Each term has its own forward pass and eps; z is detached for the
        pixel terms, so E gets no gradient from them.
        """
        run = _Nets(self.modules, model_state, True)
        x, v = mixed["x"], mixed["v"]
        frozen = jax.lax.stop_gradient(others)
        x_rec, mu, logvar = run("vae", params["vae"], x, v, noise["eps_rec"])
        terms = {"mse": losses.mse_loss(x_rec, x), "kl": kl_sum(mu, logvar)}
        terms["rec"] = lam["pix_recon"] * terms["mse"] + lam["kl"] * terms["kl"]
        z2 = run("vae", params["vae"], x, None, noise["eps_feat"], mode="encode")
        terms["feat"] = lam["feat_domain"] * self.objective.encoder_adversarial(
            run("D_feat", frozen["D_feat"], z2), v)
        total = terms["rec"] + terms["feat"]
        if self.procedure == "translation":
            t = mixed["t"]
            z3 = jax.lax.stop_gradient(
                run("vae", params["vae"], x, None, noise["eps_pix"], mode="encode"))
            x_tr = run("vae", params["vae"], z3, t, mode="decode")
            run("vae", params["vae"], jax.lax.stop_gradient(x_tr), None, noise["eps_unused"],
                mode="encode")  # the reference's unused E(x_tr): BN statistics only
            s, c = run("D_pix", frozen["D_pix"], x_tr)
            terms["adv"] = lam["pix_adv"] * self.objective.generator_adversarial(s)
            terms["clf"] = lam["pix_clf"] * self.objective.domain_loss(c, t)
            total = total + terms["adv"] + terms["clf"]
        else:
            z4 = run("vae", params["vae"], x, None, noise["eps_digit"], mode="encode")
            terms["digit"] = cross_entropy_ignore(run("D_digit", params["D_digit"], z4),
                                                  mixed["labels"])
            total = total + terms["digit"]
        return total, {"terms": terms, "model_state": run.model_state, "x_rec": x_rec}

    # ----------------------------------------------------------------- step
    def train_step(self, state: TrainState, batch: Mapping[str, Array]
                   ) -> tuple[TrainState, dict[str, Array]]:
        """One reference iteration: D_v, [D_x,] then the E/G[/D_digit] step."""
        key, noise_key = jax.random.split(state.key)
        mixed = self.mixed_batch(batch, state.step)
        x, v = mixed["x"], mixed["v"]
        noise = self.draw_noise(noise_key, x.shape[0], x.dtype)
        lam = self.lambdas(state.step)
        params = dict(state.params)
        opt_state = dict(state.opt_state)
        run = _Nets(self.modules, state.model_state, True)
        metrics = {}

        z1 = run("vae", params["vae"], x, None, noise["eps_dv"], mode="encode")
        (l_dv, aux), grads = jax.value_and_grad(self.d_feat_loss, has_aux=True)(
            params["D_feat"], run.model_state, z1, v)
        run.model_state = aux["model_state"]
        new, opt_state["D_feat"] = apply_group_update(
            self.tx["D_feat"], opt_state["D_feat"], {"D_feat": params["D_feat"]},
            {"D_feat": grads})
        params.update(new)
        metrics["Dv"] = l_dv

        if self.procedure == "translation":
            # Reference order: D_x(x) runs before G(E(x), t); D_x and the vae keep
            # separate statistics, so computing x_fake first changes nothing.
            x_fake = run("vae", params["vae"], x, mixed["t"], noise["eps_dx"])[0]
            (l_dx, aux), grads = jax.value_and_grad(self.d_pix_loss, has_aux=True)(
                params["D_pix"], run.model_state, x, x_fake, v, noise["alpha"], lam["gp"])
            run.model_state = aux["model_state"]
            new, opt_state["D_pix"] = apply_group_update(
                self.tx["D_pix"], opt_state["D_pix"], {"D_pix": params["D_pix"]},
                {"D_pix": grads})
            params.update(new)
            metrics["Dx"] = l_dx
            metrics.update(aux["terms"])

        members = self.groups["vae"]
        trained = {n: params[n] for n in members}
        others = {n: params[n] for n in self.networks if n not in members}
        (l_vae, aux), grads = jax.value_and_grad(self.vae_loss, has_aux=True)(
            trained, others, run.model_state, mixed, noise, lam)
        new, opt_state["vae"] = apply_group_update(self.tx["vae"], opt_state["vae"], trained, grads)
        params.update(new)
        metrics["vae"] = l_vae
        metrics.update(aux["terms"])
        metrics.update({f"lambda_{k}": v_ for k, v_ in lam.items()})
        new_state = state.replace(step=state.step + 1, params=params,
                                  model_state=aux["model_state"], opt_state=opt_state, key=key)
        return new_state, metrics

    # ----------------------------------------------------------------- inference
    def resolve_request(self, request: TranslationRequest) -> TranslationRequest:
        """A code of length N from --code, or the one-hot of --target (name or index).

        --direction is refused (UFDN has N domains, no direction); default: the last domain.
        """
        if request.direction is not None:
            raise ValueError("--direction does not apply to ufdn; use --target=<domain name or "
                             f"index> ({', '.join(self.domains)}) or --code=<{self.n_domains} numbers>")
        if request.code is not None and request.target is not None:
            # A resolved request (target and its one-hot code) resolves to itself.
            resolved = self.resolve_request(TranslationRequest(target=request.target))
            if tuple(float(c) for c in request.code) != resolved.code:
                raise ValueError("give either --target or --code, not both")
            return resolved
        if request.code is not None:
            if len(request.code) != self.n_domains:
                raise ValueError(f"--code={','.join(map(str, request.code))} has "
                                 f"{len(request.code)} values; this model has {self.n_domains} "
                                 f"domains ({', '.join(self.domains)})")
            return TranslationRequest(code=tuple(float(c) for c in request.code))
        target = request.target if request.target is not None else self.n_domains - 1
        if isinstance(target, str):
            if target not in self.domains:
                raise ValueError(f"--target={target!r} is not a domain of this model; expected "
                                 f"one of {', '.join(self.domains)} or 0..{self.n_domains - 1}")
            target = self.domains.index(target)
        if not 0 <= target < self.n_domains:
            raise ValueError(f"--target={target} is out of range 0..{self.n_domains - 1}")
        code = tuple(float(c) for c in domain_codes(self.n_domains)[target])
        return TranslationRequest(target=self.domains[target], code=code)

    def translation_channels(self, request: TranslationRequest) -> tuple[int, int]:
        """(input channels, output channels): img_depth both ways."""
        self.resolve_request(request)
        return self.img_depth, self.img_depth

    def describe(self, request: TranslationRequest) -> str:
        """The network and code serving `request`, in words."""
        resolved = self.resolve_request(request)
        return f"{self.architecture}; code {resolved.code}"

    def translate(self, params: Mapping[str, Any], images: Array,
                  request: TranslationRequest | Sequence[float] | None = None,
                  model_state: Mapping[str, Any] | None = None,
                  train: bool = False, key: Array | None = None) -> Array:
        """G(E(images), code): eval mode uses z = mu and running BN statistics.

        `train=True` normalises with batch statistics (stored ones unchanged) and samples
        z with eps drawn from `key` (default: a fixed key), as the reference in train mode.
        """
        if request is None or isinstance(request, TranslationRequest):
            code = self.resolve_request(request or TranslationRequest()).code
        else:
            code = tuple(request)
        code = jnp.broadcast_to(jnp.asarray(code, images.dtype), (images.shape[0], len(code)))
        variables = {"params": params["vae"]}
        stats = (model_state or {}).get("vae")
        if stats:
            variables["batch_stats"] = stats
        eps = None
        if train:
            key = jax.random.key(0) if key is None else key
            eps = jax.random.normal(key, (images.shape[0], self.z_dim), images.dtype)
        out = self.modules["vae"].apply(variables, images, code, eps, train=train,
                                        mutable=["batch_stats"] if train and stats else False)
        return (out[0] if train and stats else out)[0]

    def _digit_accuracy(self, params: Mapping[str, Any], model_state: Mapping[str, Any],
                        images: Array, labels: Array, domain: str | None = None) -> Array:
        """Fraction of `images` whose argmax D_digit(mu) equals `labels` (eval mode, uda; the
        method's `digit_accuracy` only under procedure uda, so evaluation never asks the
        translation procedure, which has no D_digit).

        As train_uda.py evaluates: running BatchNorm statistics, z = mu, no inversion. The
        encoder is shared, so the images' `domain` changes nothing.
        """
        del domain
        stats = model_state.get("vae")
        variables = {"params": params["vae"], **({"batch_stats": stats} if stats else {})}
        mu = self.modules["vae"].apply(variables, images, train=False, mode="encode")
        d_stats = model_state.get("D_digit")
        d_vars = {"params": params["D_digit"], **({"batch_stats": d_stats} if d_stats else {})}
        logits = self.modules["D_digit"].apply(d_vars, mu, train=False)
        return jnp.mean((jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32))

    def test_accuracy(self, params: Mapping[str, Any], model_state: Mapping[str, Any],
                      domain: str) -> dict[str, Any]:
        """digit_accuracy over `domain`'s whole test split (full batches of eval_batch_size)."""
        from unpaired import data  # pylint: disable=import-outside-toplevel

        spec = DataSpec(domains=(domain,), channels={domain: self.img_depth}, labels=(domain,))
        loader = data.make_loader(self.config.data, split="test", seed=0, spec=spec,
                                  batch_size=int(self.config.get("eval_batch_size", 100)))
        accuracy = jax.jit(self._digit_accuracy)
        correct = total = 0.0
        try:
            for i in range(loader.steps_per_epoch):
                batch = loader.batch(i)
                n = len(batch[domain])
                correct += n * float(accuracy(params, model_state, batch[domain],
                                              batch[DataSpec.label_key(domain)]))
                total += n
        finally:
            loader.close()
        return {"domain": domain, "split": "test", "accuracy": correct / max(total, 1),
                "images": int(total)}

    def after_training(self, state: TrainState, workdir: str, load_run: Any) -> dict[str, Any] | None:
        """uda: the final model's adaptation accuracy (classifier on mu, eval-mode BN) on the
        source and target test splits, printed and written to `<workdir>/da_accuracy.json`."""
        del load_run
        if self.procedure != "uda":
            return None
        source, target = self.domains
        result = {"step": int(state.step), "model": "final",
                  "target": self.test_accuracy(state.params, state.model_state, target),
                  "source": self.test_accuracy(state.params, state.model_state, source),
                  "note": "target labels are never used for training or model selection"}
        with open(os.path.join(workdir, "da_accuracy.json"), "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
        print(f"UFDN adaptation accuracy at step {result['step']} (final model): "
              f"target {target} {result['target']['accuracy']:.4f} "
              f"({result['target']['images']} test images), source {source} "
              f"{result['source']['accuracy']:.4f} ({result['source']['images']})")
        return result

    def visuals(self, params: Mapping[str, Any], batch: Mapping[str, Array],
                model_state: Mapping[str, Any] | None = None) -> dict[str, Array]:
        """Per domain: the inputs, then each image translated to every domain, then an
        interpolation row from the first domain's code to the last one's (5 steps)."""
        out = {}
        codes = domain_codes(self.n_domains)
        for d in self.domains:
            out[f"real_{d}"] = batch[d]
            for j, name in enumerate(self.domains):
                out[f"{d}_to_{name}"] = self.translate(params, batch[d], codes[j], model_state)
        first = self.domains[0]
        for i, a in enumerate(np.linspace(0.0, 1.0, INTERPOLATION_STEPS)):
            code = (1 - a) * codes[0] + a * codes[-1]
            out[f"interp_{i}"] = self.translate(params, batch[first], code, model_state)
        return out
