"""UNIT master's VGG perceptual loss: VGG16 to relu5_3 with the reference's quirks, frozen.

`vgg_preprocess` turns [-1, 1] RGB into Caffe input (BGR, (x + 1) * 127.5, minus the Caffe
mean); `Vgg16` has NO max-pool after relu4_3, so relu5_3 is at 1/8 resolution; `vgg_loss`
is mean((IN(f(img)) - IN(f(target)))^2) with an affine-free InstanceNorm (eps 1e-5).
Weights come from a user-supplied state_dict file read without torch (`load_vgg16`): the
reference's `vgg16.weight` (`conv1_1.weight` ... `conv5_3.bias`, Caffe weights converted
from `vgg16.t7`) or a torchvision `vgg16` state_dict (`features.0.weight` ...; the
classifier is ignored). The reference's Caffe preprocessing is applied either way, which
suits the Caffe weights it was written for. Facts: `shared/reference/unit.md` §2.1.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from unpaired import layers
from unpaired.weights import read_torch_file

Array = jax.Array
BLOCKS = (2, 2, 3, 3, 3)  # convs per block: conv1_1..conv1_2, ..., conv5_1..conv5_3
NAMES = tuple(f"conv{b + 1}_{i + 1}" for b, n in enumerate(BLOCKS) for i in range(n))
WIDTHS = (64, 128, 256, 512, 512)
# torchvision vgg16 `features` indices of the 13 convs (ReLUs and pools in between).
TORCHVISION_INDEX = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.680)
REFERENCE_FILE = os.path.join("models", "vgg16.weight")  # under the reference's vgg_model_path


class VggWeightsError(ValueError):
    """A VGG weight file that cannot serve; the message names the file and the key."""


def vgg_preprocess(x: Array) -> Array:
    """NHWC RGB in [-1, 1] -> BGR in [0, 255] minus the Caffe mean, as `utils.vgg_preprocess`."""
    x = layers.at_least_f32(x)[..., ::-1]
    x = (x + 1) * 255 * 0.5
    return x - jnp.asarray(CAFFE_MEAN_BGR, x.dtype)


class Vgg16(nn.Module):
    """conv3x3 (zero pad 1) + ReLU stacks; 2x2 max-pools after relu1_2, relu2_2, relu3_3 only."""

    widths: Sequence[int] = WIDTHS

    @nn.compact
    def __call__(self, x: Array) -> Array:
        index = 0
        for block, n in enumerate(BLOCKS):
            for _ in range(n):
                x = nn.relu(layers.Conv2d(self.widths[block], 3, 1, 1, name=NAMES[index])(x))
                index += 1
            if block < 3:  # the reference forgets the pool after relu4_3
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
        return x


def vgg_loss(params: Mapping[str, Any], img: Array, target: Array) -> Array:
    """`compute_vgg_loss(vgg, img, target)`: MSE of instance-normalised relu5_3 features."""
    widths = widths_of(params)
    net = Vgg16(widths)
    f_img = net.apply({"params": params}, vgg_preprocess(img))
    f_tgt = net.apply({"params": params}, vgg_preprocess(target))
    return jnp.mean(jnp.square(layers.instance_norm(f_img) - layers.instance_norm(f_tgt)))


def widths_of(params: Mapping[str, Any]) -> tuple[int, ...]:
    """Block widths of a VGG parameter tree (from conv{b}_1's output channels)."""
    return tuple(int(params[f"conv{b + 1}_1"]["kernel"].shape[-1]) for b in range(len(BLOCKS)))


def resolve_path(path: str) -> str:
    """`path` if it is a file; for a directory, the reference's `<dir>/models/vgg16.weight`."""
    if os.path.isdir(path):
        return os.path.join(path, REFERENCE_FILE)
    return path


def vgg_params_from_state_dict(state: Mapping[str, Any], source: str = "state_dict") -> dict[str, Any]:
    """{conv name: {kernel (HWIO), bias}} from a `conv1_1.weight` or `features.N.weight` dict.

    Raises VggWeightsError naming the first missing key or the first shape that breaks the
    VGG16 chain (3 input channels, 3x3 kernels, widths constant within a block).
    """
    keys = set(map(str, state))
    if "conv1_1.weight" in keys:
        names = {n: n for n in NAMES}
    elif "features.0.weight" in keys:
        names = {n: f"features.{i}" for n, i in zip(NAMES, TORCHVISION_INDEX)}
    else:
        raise VggWeightsError(f"{source}: neither conv1_1.weight (the reference's vgg16.weight) nor "
                              f"features.0.weight (torchvision vgg16) found; keys: {sorted(keys)[:6]}")
    params, in_ch, index = {}, 3, 0
    for block, n in enumerate(BLOCKS):
        for i in range(n):
            name, key = NAMES[index], names[NAMES[index]]
            for leaf in ("weight", "bias"):
                if f"{key}.{leaf}" not in keys:
                    raise VggWeightsError(f"{source}: missing {key}.{leaf} (VGG16 {name})")
            w = np.asarray(state[f"{key}.weight"])
            b = np.asarray(state[f"{key}.bias"])
            width = w.shape[0] if i == 0 else params[NAMES[index - 1]]["kernel"].shape[-1]
            if w.ndim != 4 or w.shape[1:] != (in_ch, 3, 3) or w.shape[0] != width or b.shape != (w.shape[0],):
                raise VggWeightsError(f"{source}: {key}.weight has shape {w.shape} (bias {b.shape}); "
                                      f"VGG16 {name} needs ({width}, {in_ch}, 3, 3)")
            params[name] = {"kernel": np.ascontiguousarray(w.transpose(2, 3, 1, 0), np.float32),
                            "bias": np.array(b, np.float32)}
            in_ch, index = w.shape[0], index + 1
    return params


def load_vgg16(path: str) -> dict[str, Any]:
    """VGG16 parameters (numpy) from a user-supplied state_dict file (see the module docstring)."""
    file = resolve_path(path)
    if not os.path.isfile(file):
        raise VggWeightsError(f"{file}: no such VGG16 weight file")
    try:
        state = read_torch_file(file)
    except (ValueError, OSError) as err:
        raise VggWeightsError(f"{file}: not a readable state_dict ({err})") from None
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise VggWeightsError(f"{file}: expected a state_dict, found {type(state).__name__}")
    return vgg_params_from_state_dict(state, file)
