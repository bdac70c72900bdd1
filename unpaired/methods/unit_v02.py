"""UNIT's NIPS-2017 image model (mingyuliutw/UNIT version_02 `COCOGANTrainer`) as pure functions.

Method `unit` with `config.arch='version_02'`: two networks, `gen` (COCOResGen2 / COCOResGen:
both domains' encoders and decoders plus the shared residual blocks, stored once) and `dis`
(COCOSharedDis: both fronts plus the shared high-level layers), each its own Adam with coupled
L2 weight decay. An iteration is `dis_update` then `gen_update` on the same pair. The noise is
the GaussianNoiseLayer's: added after the shared encoder blocks in training (z = h + n), and
the KL terms are mean(z^2) on that noisy code, as the reference computes them. The GAN is
sigmoid + BCE (`gan_type='nsgan'`). Loss weights reuse master's keys: gan_w, recon_x_w
(ll_direct_link_w), recon_x_cyc_w (ll_cycle_link_w), recon_kl_w (kl_direct_link_w, applied to
the direct code twice as the reference does), recon_kl_cyc_w (kl_cycle_link_w).
Facts: `shared/reference/unit.md` §3.1.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from unpaired import losses, torch_io
from unpaired.config_checks import ConfigError, check_at_least, check_choice, check_present
from unpaired.methods.translation import TranslationRequest
from unpaired.methods.unit import (LR_POLICIES, UNIT, _cat, _halves, _noise, adam_coupled_l2,
                                   check_optimizer, check_size_multiple, step_lr_schedule)
from unpaired.nets import unit_v02 as nets
from unpaired.weights import read_torch_file, write_torch_file

Array = jax.Array
DIS_NOISE = ("n_a", "n_b")
GEN_NOISE = ("n_a", "n_b", "n_ba", "n_ab")  # n_ba: re-encoding x_ba (-> x_bab); n_ab: x_ab
GEN_KEYS = ("gen_n_enc_front_blk", "gen_n_enc_res_blk", "gen_n_enc_shared_blk",
            "gen_n_gen_shared_blk", "gen_n_gen_res_blk", "gen_n_gen_front_blk")
LEGACY_STATS = ("running_mean", "running_var", "num_batches_tracked")


def validate_v02(config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError naming the first version_02 key whose value cannot work."""
    check_present(config, ("gen_name", "dis_name", "dis_n_front_layer", "dis_n_shared_layer",
                           "gen_res_dropout_ratio", "gan_type", "lr_policy", "vgg_w") + GEN_KEYS)
    check_choice(config, "gen_name", nets.GEN_NAMES)
    check_choice(config, "dis_name", nets.DIS_NAMES)
    check_choice(config, "lr_policy", LR_POLICIES)
    if config.gan_type != "nsgan":
        raise ConfigError(f"config.gan_type={config.gan_type!r}: the version_02 trainer has only "
                          "the sigmoid + BCE GAN; set --config.gan_type=nsgan")
    for key in ("input_dim_a", "input_dim_b", "gen_dim", "dis_dim", "gen_n_enc_front_blk",
                "gen_n_gen_front_blk", "dis_n_front_layer", "step_size"):
        check_at_least(config, key, 1)
    for key in ("gen_n_enc_res_blk", "gen_n_enc_shared_blk", "gen_n_gen_shared_blk",
                "gen_n_gen_res_blk", "dis_n_shared_layer", "gan_w", "recon_x_w", "recon_kl_w",
                "recon_x_cyc_w", "recon_kl_cyc_w", "weight_decay"):
        check_at_least(config, key, 0)
    if config.gen_n_enc_front_blk != config.gen_n_gen_front_blk:
        raise ConfigError(f"config.gen_n_gen_front_blk={config.gen_n_gen_front_blk} must equal "
                          f"config.gen_n_enc_front_blk={config.gen_n_enc_front_blk}: the decoders "
                          "must undo the encoders' downsampling")
    if config.gen_res_dropout_ratio != 0:
        raise ConfigError(f"config.gen_res_dropout_ratio={config.gen_res_dropout_ratio!r}: residual "
                          "dropout is not implemented; set --config.gen_res_dropout_ratio=0")
    if config.vgg_w != 0:
        raise ConfigError(f"config.vgg_w={config.vgg_w!r}: the version_02 trainer has no VGG "
                          "loss; set --config.vgg_w=0")
    if config.recon_h_w != 0:
        raise ConfigError(f"config.recon_h_w={config.recon_h_w!r} is never read; set it to 0")
    check_optimizer(config)
    check_size_multiple(config, 2 ** (config.gen_n_enc_front_blk - 1),
                        "2**(config.gen_n_enc_front_blk - 1)")


class UNITv02(UNIT):
    """UNIT version_02: networks `gen` (COCOResGen2) and `dis` (COCOSharedDis), shared layers once."""

    networks = ("gen", "dis")
    groups = {"gen": ("gen",), "dis": ("dis",)}

    @classmethod
    def validate_config(cls, config: ml_collections.ConfigDict) -> None:
        """Raises ConfigError naming the first version_02 key whose value cannot work."""
        validate_v02(config)

    def __init__(self, config: ml_collections.ConfigDict, steps_per_epoch: int = 1):
        del steps_per_epoch
        dtype = self._read_common(config)
        self.modules = {
            "gen": nets.CoResGen(self.channels["A"], self.channels["B"], int(config.gen_dim),
                                 *(int(config[k]) for k in GEN_KEYS), config.gen_name, dtype),
            "dis": nets.CoSharedDis(int(config.dis_dim), int(config.dis_n_front_layer),
                                    int(config.dis_n_shared_layer), dtype),
        }
        self.vgg = None  # version_02 has no VGG loss
        self.shared = {"gen": int(config.gen_n_enc_shared_blk) + int(config.gen_n_gen_shared_blk),
                       "dis": int(config.dis_n_shared_layer)}
        self.schedule = step_lr_schedule(config.lr, config.lr_policy, config.step_size, config.gamma)
        tx = adam_coupled_l2(self.schedule, config.beta1, config.beta2, config.weight_decay)
        self.tx = {"gen": tx, "dis": tx}
        self.size_multiple = 2 ** (int(config.gen_n_enc_front_blk) - 1)
        self.architecture = (f"version_02 {config.gen_name} ch {config.gen_dim}, shared blocks "
                             f"{config.gen_n_enc_shared_blk}+{config.gen_n_gen_shared_blk}")

    # ----------------------------------------------------------------- state
    def _example_inputs(self) -> tuple[Any, Any]:
        s = self.image_size
        return tuple(jax.ShapeDtypeStruct((1, s, s, self.channels[d]), jnp.float32) for d in "AB")

    def init_variables(self, key: Array) -> dict[str, Any]:
        """Weights N(0, 0.02) (`gaussian_weights_init`), biases at PyTorch's default U(+-1/sqrt(fan_in))."""
        out = {}
        zeros = [jnp.zeros(s.shape, s.dtype) for s in self._example_inputs()]
        for name, k in zip(self.networks, jax.random.split(key, len(self.networks))):
            init_key, bias_key = jax.random.split(k)
            variables = jax.jit(self.modules[name].init)(init_key, *zeros)
            out[name] = {"params": nets.torch_default_biases(variables["params"], bias_key)}
        return out

    def network_template(self, name: str) -> Any:
        return jax.eval_shape(lambda a, b: self.modules[name].init(jax.random.key(0), a, b),
                              *self._example_inputs())

    # ----------------------------------------------------------------- passes
    def encode(self, domain: str, params: Mapping[str, Any], x: Array) -> Array:
        """The shared code h (before the noise) of images of `domain` ('A' | 'B')."""
        return self.modules["gen"].apply({"params": params["gen"]}, x, domain, method="encode")

    def decode_shared(self, params: Mapping[str, Any], z: Array) -> Array:
        return self.modules["gen"].apply({"params": params["gen"]}, z, method="decode_shared")

    def decode(self, domain: str, params: Mapping[str, Any], y: Array) -> Array:
        """decode_<domain> of a `decode_shared` output."""
        return self.modules["gen"].apply({"params": params["gen"]}, y, domain, method="decode")

    def discriminate(self, domain: str, params: Mapping[str, Any], x: Array) -> Array:
        return self.modules["dis"].apply({"params": params["dis"]}, x, domain, method="discriminate")

    # ----------------------------------------------------------------- losses
    def discriminator_loss(self, d_params, g_params, batch, noise) -> tuple[Array, dict[str, Any]]:
        """`dis_update`: gan_w * sum over domains of BCE(D(real), 1) + BCE(D(fake), 0)."""
        g = jax.lax.stop_gradient(g_params)
        x_a, x_b = batch["A"], batch["B"]
        h_a, h_b = self.encode("A", g, x_a), self.encode("B", g, x_b)
        z_a = h_a + _noise(noise, "n_a", DIS_NOISE, h_a)
        z_b = h_b + _noise(noise, "n_b", DIS_NOISE, h_b)
        x_ba = jax.lax.stop_gradient(self.decode("A", g, self.decode_shared(g, z_b)))
        x_ab = jax.lax.stop_gradient(self.decode("B", g, self.decode_shared(g, z_a)))
        terms = {}
        for name, domain, real, fake in (("dis_a", "A", x_a, x_ba), ("dis_b", "B", x_b, x_ab)):
            out = self.discriminate(domain, d_params, _cat(real, fake.astype(real.dtype)))
            true, false = _halves(out)
            terms[name] = losses.bce_with_logits(true, jnp.ones_like(true)) + \
                losses.bce_with_logits(false, jnp.zeros_like(false))
        return self.w["gan_w"] * (terms["dis_a"] + terms["dis_b"]), {"terms": terms}

    def generator_loss(self, g_params, d_params, batch, noise, vgg_params=None
                       ) -> tuple[Array, dict[str, Any]]:
        """`gen_update`: BCE GAN on x_ba/x_ab, L1 recon and cycle, KL mean(z^2) on the noisy codes."""
        d = jax.lax.stop_gradient(d_params)
        x_a, x_b = batch["A"], batch["B"]
        h_a, h_b = self.encode("A", g_params, x_a), self.encode("B", g_params, x_b)
        z_a = h_a + _noise(noise, "n_a", GEN_NOISE, h_a)
        z_b = h_b + _noise(noise, "n_b", GEN_NOISE, h_b)
        shared = _cat(z_a, z_b)
        y = self.decode_shared(g_params, shared)
        x_aa, x_ba = _halves(self.decode("A", g_params, y))
        x_ab, x_bb = _halves(self.decode("B", g_params, y))
        h_bab = self.encode("A", g_params, x_ba.astype(x_a.dtype))
        z_bab = h_bab + _noise(noise, "n_ba", GEN_NOISE, h_bab)
        x_bab = self.decode("B", g_params, self.decode_shared(g_params, z_bab))
        h_aba = self.encode("B", g_params, x_ab.astype(x_b.dtype))
        z_aba = h_aba + _noise(noise, "n_ab", GEN_NOISE, h_aba)
        x_aba = self.decode("A", g_params, self.decode_shared(g_params, z_aba))
        out_a = self.discriminate("A", d, x_ba.astype(x_a.dtype))
        out_b = self.discriminate("B", d, x_ab.astype(x_b.dtype))
        kl = lambda z: jnp.mean(jnp.square(z.astype(jnp.promote_types(z.dtype, jnp.float32))))
        t = {"ad_loss_a": losses.bce_with_logits(out_a, jnp.ones_like(out_a)),
             "ad_loss_b": losses.bce_with_logits(out_b, jnp.ones_like(out_b)),
             "enc_loss": kl(shared), "enc_bab_loss": kl(z_bab), "enc_aba_loss": kl(z_aba),
             "ll_loss_a": losses.l1_loss(x_aa, x_a), "ll_loss_b": losses.l1_loss(x_bb, x_b),
             "ll_loss_aba": losses.l1_loss(x_aba, x_a), "ll_loss_bab": losses.l1_loss(x_bab, x_b)}
        w = self.w
        total = (w["gan_w"] * (t["ad_loss_a"] + t["ad_loss_b"])
                 + w["recon_x_w"] * (t["ll_loss_a"] + t["ll_loss_b"])
                 + w["recon_x_cyc_w"] * (t["ll_loss_aba"] + t["ll_loss_bab"])
                 + w["recon_kl_w"] * (t["enc_loss"] + t["enc_loss"])
                 + w["recon_kl_cyc_w"] * (t["enc_bab_loss"] + t["enc_aba_loss"]))
        images = {"x_aa": x_aa, "x_ba": x_ba, "x_ab": x_ab, "x_bb": x_bb,
                  "x_aba": x_aba, "x_bab": x_bab}
        return total, {"terms": t, "images": images}

    # train_step is UNIT's: D update, then G against the updated D; groups gen / dis.

    # ----------------------------------------------------------------- inference
    def translation_channels(self, request: TranslationRequest) -> tuple[int, int]:
        direction = self.resolve_request(request).direction
        src, dst = ("A", "B") if direction == "AtoB" else ("B", "A")
        return self.channels[src], self.channels[dst]

    def describe(self, request: TranslationRequest) -> str:
        direction = self.resolve_request(request).direction
        src, dst = ("A", "B") if direction == "AtoB" else ("B", "A")
        in_nc, out_nc = self.translation_channels(request)
        return (f"gen.encode_{src} -> shared -> gen.decode_{dst}: {self.architecture}, "
                f"{in_nc}->{out_nc} channels")

    def translate(self, params, images, request="AtoB", model_state=None, train=False, key=None):
        """forward_a2b / forward_b2a in eval mode: the noise layer adds nothing."""
        del model_state, train, key
        direction = request if isinstance(request, str) else self.resolve_request(request).direction
        src, dst = ("A", "B") if direction == "AtoB" else ("B", "A")
        return self.decode(dst, params, self.decode_shared(params, self.encode(src, params, images)))

    def visuals(self, params, batch, model_state=None) -> dict[str, Array]:
        """x_a | x_a_recon | x_ab | x_b | x_b_recon | x_ba, without noise."""
        y_a = self.decode_shared(params, self.encode("A", params, batch["A"]))
        y_b = self.decode_shared(params, self.encode("B", params, batch["B"]))
        return {"x_a": batch["A"], "x_a_recon": self.decode("A", params, y_a),
                "x_ab": self.decode("B", params, y_a), "x_b": batch["B"],
                "x_b_recon": self.decode("B", params, y_b), "x_ba": self.decode("A", params, y_b)}

    # ----------------------------------------------------------------- weights
    def import_weights(self, path: str, names: tuple[str, ...]) -> dict[str, Any]:
        """{name: variables} from a version_02 `*_gen_XXXXXXXX.pkl` / `*_dis_XXXXXXXX.pkl`
        (one state_dict each); PyTorch-0.3 InstanceNorm running statistics are dropped."""
        obj = read_torch_file(path)
        if not isinstance(obj, Mapping):
            raise ValueError(f"{path} is not a version_02 state_dict (found {type(obj).__name__})")
        state = {str(k): np.array(v, copy=True) for k, v in obj.items()
                 if not str(k).endswith(LEGACY_STATS)}
        kind = "gen" if any(k.startswith("encode_") for k in state) else "dis"
        if tuple(names) != (kind,):
            raise ValueError(f"{path} is a version_02 {kind} file: config.init_networks must be "
                             f"{kind} (got {','.join(names) or 'nothing'})")
        hint = ("check config.gen_name, gen_dim and gen_n_* (dis_dim, dis_n_front_layer, "
                "dis_n_shared_layer) against the yaml the file was trained with")
        return {kind: torch_io.from_state_dict(state, self.network_template(kind), source=path,
                                               hint=hint)}

    def load_official(self, path, request):
        served = self.resolve_request(request)
        params = {"gen": self.import_weights(path, ("gen",))["gen"]["params"]}
        return params, {"gen": {}}, served

    def official_state_dict(self, params: Mapping[str, Any], kind: str = "gen") -> dict[str, np.ndarray]:
        """The state_dict `COCOGANTrainer.save` writes for `kind` gen or dis."""
        return torch_io.to_state_dict({"params": params[kind]})

    def export_official(self, params: Mapping[str, Any], model_state: Mapping[str, Any],
                        path: str) -> list[str]:
        """`gen.pkl` and `dis.pkl` (those present) under folder `path`, the state_dicts
        version_02 saves as `*_gen_XXXXXXXX.pkl` / `*_dis_XXXXXXXX.pkl` (the export hook)."""
        del model_state  # instance norms without statistics
        params = jax.device_get(params)
        os.makedirs(path, exist_ok=True)
        written = []
        for kind in [k for k in ("gen", "dis") if k in params]:
            out = os.path.join(path, f"{kind}.pkl")
            write_torch_file(self.official_state_dict(params, kind), out)
            written.append(out)
        return written
