"""Official UFDN files: whole pickled modules read as data, then translating as torch does.

The PyTorch re-expression is pickled the way the reference saves it (`torch.save(vae)`,
class `src.ufdn.UFDN` from a throwaway `sys.modules['src.ufdn']`, legacy format, CUDA
location tags, no BatchNorm `num_batches_tracked` as PyTorch 0.4.0 wrote).
"""

import os
import sys
import types

import numpy as np
import pytest
import torch

from configs import ufdn as ufdn_config
from unpaired import methods
from unpaired.methods.translation import TranslationRequest
from unpaired.torch_reference import ufdn as ref
from unpaired.weights import UnsafePickleError

from tests.helpers import nchw, nhwc, rel_err


def _config():
    return ufdn_config.get_config("digits")


def _pickled(tmp_path, monkeypatch, net, cls_name, legacy_0_4=True):
    """torch.save(net) with `net`'s class renamed src.ufdn.<cls_name>, CUDA tags."""
    src, module = types.ModuleType("src"), types.ModuleType("src.ufdn")
    cls = type(cls_name, (type(net),), {})
    cls.__module__, cls.__qualname__ = "src.ufdn", cls_name
    setattr(module, cls_name, cls)
    src.ufdn = module
    monkeypatch.setitem(sys.modules, "src", src)
    monkeypatch.setitem(sys.modules, "src.ufdn", module)
    net.__class__ = cls
    if legacy_0_4:
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                del m._buffers["num_batches_tracked"]
    path = os.path.join(tmp_path, "vae")
    with monkeypatch.context() as m:
        m.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        torch.save(net, path, _use_new_zipfile_serialization=False)
    return path


def _trained_like_vae():
    config = _config()
    torch.manual_seed(0)
    net = ref.UFDN(config.encoder, config.decoder, 3)
    with torch.no_grad():  # non-trivial running statistics and gammas, as after training
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
    return net.eval()


@pytest.mark.parametrize("request_", [TranslationRequest(target=2),
                                      TranslationRequest(code=(0.3, 0.7, 0.0))],
                         ids=["target", "code"])
def test_pickled_vae_loads_and_translates_equal_to_torch(tmp_path, monkeypatch, request_):
    net = _trained_like_vae()
    x = np.random.RandomState(0).uniform(-1, 1, (3, 32, 32, 3)).astype(np.float32)
    code = (0.0, 0.0, 1.0) if request_.target is not None else request_.code
    with torch.no_grad():
        expected = nhwc(net(nchw(x), torch.tensor([code] * 3, dtype=torch.float32))[0])
    path = _pickled(tmp_path, monkeypatch, net, "UFDN")
    method = methods.build(_config())
    params, model_state, served = method.load_official(path, request_)
    assert served.code == tuple(code)
    ours = method.translate(params, x, served, model_state)
    assert rel_err(ours, expected) < 1e-5


def test_pickled_discriminator_loads_for_the_network_named(tmp_path, monkeypatch):
    config = _config()
    net = ref.Discriminator(config.D_pix, 3, 32)
    path = _pickled(tmp_path, monkeypatch, net, "Discriminator", legacy_0_4=False)
    method = methods.build(config)
    assert set(method.import_weights(path, ("D_pix",))) == {"D_pix"}
    with pytest.raises(ValueError, match="init_networks"):
        method.import_weights(path, ("vae",))


def test_unexpected_class_or_callable_payload_is_refused(tmp_path, monkeypatch):
    path = _pickled(tmp_path, monkeypatch, _trained_like_vae(), "Evil")
    method = methods.build(_config())
    with pytest.raises(UnsafePickleError, match="src.ufdn.Evil"):
        method.load_official(path, TranslationRequest(target=0))

    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    net = _trained_like_vae()
    net.payload = Payload()
    path = _pickled(tmp_path, monkeypatch, net, "UFDN")
    with pytest.raises(UnsafePickleError):
        method.load_official(path, TranslationRequest(target=0))
