"""UFDN networks (Liu et al. 2018) built from the reference's config layer lists.

Flax modules only. `UFDN` is the encoder E + decoder G (the reference's "vae"),
`Discriminator` serves as D_v (latent), D_x (pixels: critic + domain heads) and the digit
classifier. Flat module names spell the reference's keys: `enc_0_0` is `enc_0.0` (the
ConvBlock's conv), `enc_0_1` its BatchNorm, `layer_out_1_0` the second head's Linear, so
`unpaired.torch_io` maps the official state_dicts one to one. Facts:
`shared/reference/ufdn.md` §2, §3.

Layer lists (tuples or lists, as in the reference's YAML):
  encoder / discriminator conv: ('conv', out, kernel, stride, pad, norm, act)
  decoder conv (a ConvTranspose2d): ('conv', out, kernel, stride, pad, norm, act, insert_code)
  discriminator fc: ('fc', out, norm, act, dropout); the last entry's `out` may be a list
  of head sizes. norm: 'bn' or ''; act: 'LeakyReLU' (0.2), 'ReLU', 'Tanh', 'Sigmoid' or ''.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from unpaired import layers

Array = jax.Array
ACTIVATIONS = ("LeakyReLU", "ReLU", "Tanh", "Sigmoid", "")
NORMS = ("bn", "")


def activation(name: str, x: Array) -> Array:
    """The reference's `get_act(name)` applied to x."""
    if name == "LeakyReLU":
        return layers.leaky_relu(x, 0.2)
    if name == "ReLU":
        return jax.nn.relu(x)
    if name == "Tanh":
        return jnp.tanh(x)
    if name == "Sigmoid":
        return jax.nn.sigmoid(x)
    if name == "":
        return x
    raise ValueError(f"unknown activation {name!r}; expected one of {ACTIVATIONS}")


def _batch_norm(name: str) -> nn.Module:
    """BatchNorm2d/1d with the reference's `weights_init`: gamma ~ N(0, 0.02), beta = 0."""
    return layers.BatchNorm(init_gain=0.02, scale_mean=0.0, name=name)


def conv_block(x: Array, spec: Sequence[Any], name: str, train: bool,
               transpose: bool = False) -> Array:
    """ConvBlock: [Conv2d | ConvTranspose2d] (bias) -> [BN] -> [act]; indices 0, 1."""
    _, out, kernel, stride, pad, norm, act = spec[:7]
    if transpose:
        h = layers.ConvTranspose2d(int(out), int(kernel), int(stride), int(pad), 0,
                                   name=f"{name}_0")(x)
    else:
        h = layers.Conv2d(int(out), int(kernel), int(stride), int(pad), name=f"{name}_0")(x)
    if norm == "bn":
        h = _batch_norm(f"{name}_1")(h, train)
    return activation(act, h)


def fc_block(x: Array, spec: Sequence[Any], name: str, train: bool) -> Array:
    """FC: Linear (bias) -> [BN1d] -> [act]; dropout is 0 in every reference config."""
    _, out, norm, act = spec[:4]
    h = layers.Linear(int(out), name=f"{name}_0")(x)
    if norm == "bn":
        h = _batch_norm(f"{name}_1")(h[:, None, None, :], train)[:, 0, 0, :]
    return activation(act, h)


def tile_code(h: Array, code: Array) -> Array:
    """[h ; code] on channels, the code repeated over H and W (NHWC)."""
    n, height, width, _ = h.shape
    tiled = jnp.broadcast_to(code[:, None, None, :].astype(h.dtype),
                             (n, height, width, code.shape[-1]))
    return jnp.concatenate([h, tiled], axis=-1)


class UFDN(nn.Module):
    """E + G. `mode`: 'full' -> (x_rec, mu, logvar); 'encode' -> (mu, logvar) or z;
    'decode' -> G(x as z, code).

    `eps` (N, z_dim) is the reparameterisation noise: z = mu + eps * exp(logvar / 2);
    None gives z = mu (the reference's eval mode). Randomness comes from the caller.
    """

    encoder: Sequence[Sequence[Any]]
    decoder: Sequence[Sequence[Any]]

    def _encode(self, x: Array, train: bool) -> tuple[Array, Array]:
        h = x
        for i, spec in enumerate(self.encoder[:-1]):
            h = conv_block(h, spec, f"enc_{i}", train)
        mu = conv_block(h, self.encoder[-1], "enc_mu", train)
        logvar = conv_block(h, self.encoder[-1], "enc_logvar", train)
        # (N, 1, 1, z) -> (N, z); for larger maps, PyTorch's NCHW flatten order.
        flat = lambda a: jnp.transpose(a, (0, 3, 1, 2)).reshape(a.shape[0], -1)
        return flat(mu), flat(logvar)

    def _decode(self, z: Array, code: Array, train: bool) -> Array:
        h = z.reshape(z.shape[0], 1, 1, -1) if z.ndim == 2 else z
        for i, spec in enumerate(self.decoder):
            if len(spec) > 7 and spec[7]:
                h = tile_code(h, code)
            h = conv_block(h, spec, f"dec_{i}", train, transpose=True)
        return h

    @nn.compact
    def __call__(self, x: Array, code: Array | None = None, eps: Array | None = None,
                 train: bool = True, mode: str = "full") -> Any:
        if mode == "decode":
            return self._decode(x, code, train)
        mu, logvar = self._encode(x, train)
        z = mu if eps is None else mu + eps.astype(mu.dtype) * jnp.exp(0.5 * logvar)
        if mode == "encode":
            return z
        if mode == "moments":
            return mu, logvar
        if mode != "full":
            raise ValueError(f"unknown UFDN mode {mode!r}; expected full, encode, moments, decode")
        return self._decode(z, code, train), mu, logvar


class Discriminator(nn.Module):
    """The reference's `Discriminator(dnn)`: hidden `layer_i`, heads `layer_out_j`.

    Returns one array for one head, else a tuple (head 0, head 1, ...). A 4-D activation
    is flattened in PyTorch's NCHW order before the first fc layer.
    """

    dnn: Sequence[Sequence[Any]]

    @nn.compact
    def __call__(self, x: Array, train: bool = True) -> Any:
        h = x
        for i, spec in enumerate(self.dnn[:-1]):
            if spec[0] == "conv":
                h = conv_block(h, spec, f"layer_{i}", train)
            else:
                if h.ndim == 4:
                    h = jnp.transpose(h, (0, 3, 1, 2)).reshape(h.shape[0], -1)
                h = fc_block(h, spec, f"layer_{i}", train)
        if h.ndim == 4:
            h = jnp.transpose(h, (0, 3, 1, 2)).reshape(h.shape[0], -1)
        outs = self.dnn[-1][1]
        sizes = list(outs) if isinstance(outs, (list, tuple)) else [outs]
        heads = tuple(layers.Linear(int(s), name=f"layer_out_{j}_0")(h)
                      for j, s in enumerate(sizes))
        return heads[0] if len(heads) == 1 else heads


def freeze(spec: Any) -> Any:
    """Nested lists (from a config) as nested tuples, hashable for a Flax module field."""
    if isinstance(spec, (list, tuple)):
        return tuple(freeze(s) for s in spec)
    return spec
