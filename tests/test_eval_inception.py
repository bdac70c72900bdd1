"""FID InceptionV3 parity with pytorch-fid's layout (torch re-expression, random weights), its
weight file read without torch, the torch-exact bilinear resize, and the flag-naming errors.

Tolerance: pool3 features in float32 to 1e-4 of their largest value (94 conv + BN layers
deep; XLA's and torch's conv algorithms round differently); the resize to 1e-5 (torch rounds its float32 source positions).
"""

import jax
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.helpers import nchw, nhwc, rel_err
from unpaired.eval import inception
from unpaired.torch_reference import inception as ref


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A randomly initialised reference network and its state_dict saved as a .pth file."""
    net = ref.randomize_(ref.FIDInceptionV3(), seed=0)
    path = tmp_path_factory.mktemp("inception") / inception.WEIGHTS_FILE
    torch.save(net.state_dict(), path)
    return net, str(path)


@pytest.fixture(scope="module")
def variables(reference):
    return inception.load_inception(reference[1])


def test_pool3_matches_the_torch_reference_at_the_smallest_input(reference, variables):
    net, _ = reference
    x = np.random.RandomState(0).uniform(0, 1, (2, inception.MIN_SIZE, inception.MIN_SIZE, 3)).astype(np.float32)
    ours = jax.jit(inception.FIDInceptionV3(resize_input=False).apply)(variables, x)  # one compile, not one per op
    with torch.no_grad():
        theirs = net.pool3(nchw(x), resize_input=False).numpy()
    assert ours.shape == theirs.shape == (2, inception.FEATURE_DIM)
    assert np.std(theirs) > 1e-2  # the random weights keep the features informative
    assert rel_err(ours, theirs) < 1e-4


def test_feature_fn_resizes_grayscale_digits_to_299_as_pytorch_fid(reference, variables):
    net, _ = reference
    digits = np.random.RandomState(1).uniform(-1, 1, (1, 32, 32, 1)).astype(np.float32)
    ours = inception.inception_feature_fn(variables)(digits)
    rgb01 = np.repeat((digits + 1) / 2, 3, axis=-1)
    with torch.no_grad():
        theirs = net.pool3(nchw(rgb01)).numpy()
    assert rel_err(ours, theirs) < 1e-4


@pytest.mark.parametrize("size", [(32, 32), (16, 28), (299, 299), (300, 512)])
def test_resize_is_torch_bilinear_without_antialias(size):
    x = np.random.RandomState(2).normal(size=(2, *size, 3)).astype(np.float32)
    ours = inception.resize_bilinear(x, 299)
    theirs = nhwc(F.interpolate(nchw(x), size=(299, 299), mode="bilinear", align_corners=False))
    assert rel_err(ours, theirs) < 1e-5  # torch rounds source positions and weights in float32


def test_weight_file_errors_name_the_flag(reference, tmp_path):
    with pytest.raises(inception.InceptionWeightsError, match="config.inception_weights is not set"):
        inception.load_inception("")
    missing = str(tmp_path / "nowhere.pth")
    with pytest.raises(inception.InceptionWeightsError, match="config.fid_weights=.*no such file"):
        inception.load_inception(missing, key="fid_weights")
    state = {k: v.numpy() for k, v in reference[0].state_dict().items()}
    incomplete = {k: v for k, v in state.items() if k != "Mixed_6c.branch7x7dbl_3.bn.running_var"}
    with pytest.raises(inception.InceptionWeightsError, match="Mixed_6c.branch7x7dbl_3.bn.running_var"):
        inception.variables_from_state_dict(incomplete)
    torchvision_head = {**state, "fc.weight": np.zeros((1000, 2048), np.float32)}
    with pytest.raises(inception.InceptionWeightsError, match="1008"):
        inception.variables_from_state_dict(torchvision_head)
    aux = {**state, "AuxLogits.fc.weight": np.zeros((1000, 768), np.float32)}
    with pytest.raises(inception.InceptionWeightsError, match="AuxLogits"):
        inception.variables_from_state_dict(aux)
    not_a_file = tmp_path / "garbage.pth"
    not_a_file.write_bytes(b"not a torch file")
    with pytest.raises(inception.InceptionWeightsError, match="config.inception_weights="):
        inception.load_inception(not_a_file)
