"""unpaired.weights.torch_pickle / torch_writer: .pth files written by real torch, read without it.

Both formats (zip, and the legacy stream `_use_new_zipfile_serialization=False` writes),
views and shared storages, CUDA location tags, whole pickled modules through stand-ins,
and pickles carrying code, which must be refused before anything runs.
"""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from unpaired import torch_io
from unpaired.weights import (
    ModuleStandIn,
    StandIns,
    TorchFileError,
    UnsafePickleError,
    load_state_dict_file,
    module_state_dict,
    read_torch_file,
    torch_nn_classes,
    write_torch_file,
)

REPO = Path(__file__).resolve().parents[1]
FORMATS = {"zip": True, "legacy": False}
pytestmark = pytest.mark.filterwarnings("ignore:Couldn't retrieve source code")


def _save(obj, path, fmt):
    torch.save(obj, path, _use_new_zipfile_serialization=FORMATS[fmt])
    return path


def _numpy(t: torch.Tensor) -> np.ndarray:
    """torch's values as numpy (bfloat16 through float32, which holds it exactly)."""
    t = t.detach()
    return t.float().numpy() if t.dtype == torch.bfloat16 else t.numpy()


def _assert_same(ours, theirs: torch.Tensor):
    assert isinstance(ours, np.ndarray)
    assert ours.shape == tuple(theirs.shape)
    assert str(ours.dtype) == str(theirs.dtype).replace("torch.", "")
    np.testing.assert_array_equal(np.asarray(ours, _numpy(theirs).dtype), _numpy(theirs))


def _tensors():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(4, 5, generator=g)
    return collections.OrderedDict(
        f32=torch.randn(2, 3, 4, generator=g),
        f64=torch.randn(3, generator=g, dtype=torch.float64),
        f16=torch.randn(5, generator=g).half(),
        bf16=torch.randn(2, 2, generator=g).bfloat16(),
        i64=torch.arange(-3, 3, dtype=torch.int64),
        i32=torch.arange(4, dtype=torch.int32) * 7,
        u8=torch.arange(250, 256, dtype=torch.uint8),
        boolean=torch.tensor([True, False, True]),
        scalar=torch.tensor(3.5),
        empty=torch.zeros(0, 3),
        base=base,
        transposed=base.t(),               # non-contiguous view of base's storage
        offset=base[1:, 2:],               # offset view
        strided=base[::2, ::3],
        param=nn.Parameter(torch.randn(3, generator=g)),
    )


@pytest.mark.parametrize("fmt", FORMATS)
def test_tensors_of_every_dtype_and_view_read_back_equal(tmp_path, fmt):
    tensors = _tensors()
    obj = {"state": tensors, "nested": [tensors["f32"], (tensors["offset"], {"x": 1})], "epoch": 7}
    path = _save(obj, tmp_path / "t.pth", fmt)
    ours = read_torch_file(path)
    for name, tensor in tensors.items():
        _assert_same(ours["state"][name], tensor)
    assert isinstance(ours["state"], collections.OrderedDict)
    assert list(ours["state"]) == list(tensors)
    _assert_same(ours["nested"][0], tensors["f32"])
    _assert_same(ours["nested"][1][0], tensors["offset"])
    assert ours["nested"][1][1] == {"x": 1} and ours["epoch"] == 7
    # Views of one storage share it, as torch's do.
    assert np.shares_memory(ours["state"]["base"], ours["state"]["transposed"])
    assert np.shares_memory(ours["state"]["base"], ours["state"]["offset"])


@pytest.mark.parametrize("fmt", FORMATS)
def test_module_state_dict_file_loads_like_torch(tmp_path, fmt):
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ConvTranspose2d(4, 2, 4))
    path = _save(net.state_dict(), tmp_path / "net.pth", fmt)
    ours = load_state_dict_file(path)
    assert list(ours) == list(net.state_dict())
    for key, tensor in net.state_dict().items():
        _assert_same(ours[key], tensor)
    # The {'state_dict': ...} wrapper some checkpoints use is unwrapped.
    wrapped = _save({"state_dict": net.state_dict(), "epoch": 3}, tmp_path / "w.pth", fmt)
    assert list(load_state_dict_file(wrapped)) == list(net.state_dict())
    # torch_io.load_pth is this reader.
    assert list(torch_io.load_pth(str(path))) == list(net.state_dict())


@pytest.mark.parametrize("fmt", FORMATS)
def test_cuda_location_tags_are_read_on_cpu(tmp_path, monkeypatch, fmt):
    tensors = {"w": torch.randn(3, 2), "n": torch.tensor(4)}
    monkeypatch.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
    path = _save(tensors, tmp_path / "cuda.pth", fmt)
    monkeypatch.undo()
    raw = (zipfile.ZipFile(path).read("cuda/data.pkl") if fmt == "zip" else path.read_bytes())
    assert b"cuda:0" in raw  # the tag really is in the file
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError):  # torch itself cannot load it without a GPU
            torch.load(path, weights_only=True)
    ours = read_torch_file(path)
    for key, tensor in tensors.items():
        _assert_same(ours[key], tensor)


# --------------------------------------------------------------------------------------
# Whole pickled modules, as the UFDN reference saves them (torch.save(vae_module, path))


def _ufdn_module(monkeypatch):
    """A `src.ufdn.UFDN` class in a throwaway module, as the reference's checkpoints name it."""
    src = types.ModuleType("src")
    ufdn = types.ModuleType("src.ufdn")

    class UFDN(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc_0 = nn.Sequential(nn.Conv2d(3, 4, 4, 2, 1), nn.BatchNorm2d(4), nn.LeakyReLU(0.2))
            self.enc_mu = nn.Sequential(nn.Conv2d(4, 6, 4, 2, 1))
            self.dec_0 = nn.Sequential(nn.ConvTranspose2d(8, 4, 4, 2, 1), nn.BatchNorm2d(4),
                                       nn.LeakyReLU(0.2))
            self.enc_layers = ["conv", "conv"]
            self.dec_layers = [("conv", True)]
            self.attr_dim = 2

    UFDN.__module__, UFDN.__qualname__ = "src.ufdn", "UFDN"
    ufdn.UFDN = UFDN
    src.ufdn = ufdn
    monkeypatch.setitem(sys.modules, "src", src)
    monkeypatch.setitem(sys.modules, "src.ufdn", ufdn)
    torch.manual_seed(0)
    net = UFDN()
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-1, 1)
                module.running_var.uniform_(0.5, 2)
                module.num_batches_tracked.fill_(12)
    return net


def _save_whole(net, path, fmt, monkeypatch):
    """torch.save(module) with CUDA location tags, as checkpoints trained on a GPU hold them."""
    with monkeypatch.context() as m:
        m.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        _save(net, path, fmt)
    return path


@pytest.mark.parametrize("fmt", FORMATS)
def test_whole_pickled_module_reads_through_stand_ins(tmp_path, monkeypatch, fmt):
    net = _ufdn_module(monkeypatch)
    path = _save_whole(net, tmp_path / "vae", fmt, monkeypatch)
    stand_in = read_torch_file(path, stand_ins=StandIns(["src.ufdn.UFDN"]))
    assert isinstance(stand_in, ModuleStandIn) and stand_in.torch_class == "src.ufdn.UFDN"
    assert stand_in.attr_dim == 2 and stand_in.dec_layers == [("conv", True)]
    expected = net.state_dict()
    ours = module_state_dict(stand_in)
    assert list(ours) == list(expected)
    for key, tensor in expected.items():
        _assert_same(ours[key], tensor)
    # The layer inside is a stand-in of the torch.nn class, with its plain attributes.
    conv = stand_in._modules["enc_0"]._modules["0"]
    assert conv.torch_class == "torch.nn.modules.conv.Conv2d" and tuple(conv.stride) == (2, 2)


class _Thnn:
    """torch 0.4 modules held `_backend`, pickled as a call of this (now empty) function."""

    def __reduce__(self):
        import torch.nn.backends.thnn

        return torch.nn.backends.thnn._get_thnn_function_backend, ()


def test_module_as_torch_0_4_wrote_it(tmp_path, monkeypatch):
    """No `num_batches_tracked`, a `_backend` attribute per module, legacy format, CUDA tags."""
    net = _ufdn_module(monkeypatch)
    for module in net.modules():
        module._backend = _Thnn()
        if isinstance(module, nn.BatchNorm2d):
            del module._buffers["num_batches_tracked"]
    path = _save_whole(net, tmp_path / "vae_0_4", "legacy", monkeypatch)
    assert b"_get_thnn_function_backend" in path.read_bytes()
    stand_in = read_torch_file(path, stand_ins=StandIns(["src.ufdn.UFDN"]))
    assert stand_in._backend is None
    ours = module_state_dict(stand_in)
    assert not any(k.endswith("num_batches_tracked") for k in ours)
    assert list(ours) == list(net.state_dict())
    for key, tensor in net.state_dict().items():
        _assert_same(ours[key], tensor)


@pytest.mark.parametrize("fmt", FORMATS)
def test_module_class_not_allowed_is_refused_naming_it(tmp_path, monkeypatch, fmt):
    path = _save_whole(_ufdn_module(monkeypatch), tmp_path / "vae", fmt, monkeypatch)
    with pytest.raises(UnsafePickleError, match=r"'src\.ufdn\.UFDN'.*StandIns\(\['src\.ufdn\.UFDN'\]\)") as err:
        read_torch_file(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    # Allowing the method's class but not torch.nn's layers refuses the first layer.
    with pytest.raises(UnsafePickleError, match=r"torch\.nn\.modules\.\w+\.\w+"):
        read_torch_file(path, stand_ins=StandIns(["src.ufdn.UFDN"], torch_nn=False))
    # Allowing is per call: an earlier allowed read leaves no trace.
    read_torch_file(path, stand_ins=StandIns(["src.ufdn.UFDN"]))
    with pytest.raises(UnsafePickleError):
        read_torch_file(path)
    with pytest.raises(UnsafePickleError):
        load_state_dict_file(path)


def test_torch_nn_classes_are_real_torch_classes():
    for name in torch_nn_classes():
        module, _, attr = name.rpartition(".")
        if module == "torch.nn.backends.thnn":  # torch 0.4's backend hook, gone from torch today
            continue
        assert isinstance(getattr(__import__(module, fromlist=[attr]), attr), type), name


# --------------------------------------------------------------------------------------
# Pickled code is refused before it runs


class _Payload:
    def __init__(self, call, arg):
        self.call, self.arg = call, arg

    def __reduce__(self):
        return self.call, (self.arg,)


def _payloads(marker: Path):
    command = f"touch {marker}"
    return {
        "os.system": _Payload(os.system, command),
        "builtins.exec": _Payload(exec, f"open({str(marker)!r}, 'w').close()"),
        "builtins.eval": _Payload(eval, f"open({str(marker)!r}, 'w').close()"),
        "subprocess.Popen": _Payload(subprocess.Popen, ["touch", str(marker)]),
    }


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", ["os.system", "builtins.exec", "builtins.eval", "subprocess.Popen"])
def test_reduce_payload_is_refused_and_never_runs(tmp_path, fmt, name):
    marker = tmp_path / "pwned"
    payload = _payloads(marker)[name]
    path = _save({"weight": torch.ones(2), "evil": payload}, tmp_path / "evil.pth", fmt)
    assert not marker.exists()
    global_name = {"os.system": f"{os.system.__module__}.system"}.get(name, name)  # posix.system
    with pytest.raises(UnsafePickleError, match=rf"'{global_name}'"):
        read_torch_file(path)
    with pytest.raises(UnsafePickleError):
        torch_io.load_pth(str(path))
    with pytest.raises(UnsafePickleError):  # stand-ins for modules allow no functions
        read_torch_file(path, stand_ins=StandIns(["src.ufdn.UFDN"]))
    assert not marker.exists()


def test_hand_written_pickles_with_other_code_paths_are_refused(tmp_path):
    marker = tmp_path / "pwned"
    cmd = f"touch {marker}".encode()
    attacks = {
        # GLOBAL + REDUCE at the top level of a zip archive's data.pkl
        "posix.system": b"\x80\x02cposix\nsystem\nq\x00X" + bytes([len(cmd)]) + b"\x00\x00\x00"
        + cmd + b"\x85R.",
        # INST opcode (protocol 0)
        "os.system": b"(S'" + cmd + b"'\nios\nsystem\n.",
        # a builtin that is not a container
        "builtins.getattr": b"\x80\x02cbuiltins\ngetattr\n.",
        # copyreg reconstruction of an arbitrary class
        "copyreg._reconstructor": b"\x80\x02ccopyreg\n_reconstructor\n.",
    }
    for name, data in attacks.items():
        path = tmp_path / "attack.pth"
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("attack/data.pkl", data)
        with pytest.raises(UnsafePickleError, match=rf"'{name}'"):
            read_torch_file(path)
    assert not marker.exists()


def test_tensor_views_cannot_reach_past_their_storage():
    from unpaired.weights.torch_pickle import _as_tensor

    storage = np.arange(6, dtype=np.float32)
    np.testing.assert_array_equal(_as_tensor(storage, 1, (2, 2), (3, 1), "f"), [[1, 2], [4, 5]])
    with pytest.raises(TorchFileError, match="reaches past its storage"):
        _as_tensor(storage, 1, (2, 3), (3, 1), "f")
    # A stride-0 "tensor" of a huge size must not serve as the storage of another tensor.
    wide = _as_tensor(storage, 0, (10**6,), (0,), "f")
    with pytest.raises(TorchFileError, match="not a storage"):
        _as_tensor(wide, 0, (10**6,), (1,), "f")


def test_malformed_files_are_clear_errors(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(TorchFileError, match="junk.pth"):
        read_torch_file(junk)
    legacy = _save({"w": torch.ones(1000)}, tmp_path / "cut.pth", "legacy")
    legacy.write_bytes(legacy.read_bytes()[:-100])
    with pytest.raises(TorchFileError, match=r"cut.pth: storage .* cut short"):
        read_torch_file(legacy)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        read_torch_file(tmp_path / "missing.pth")
    plain = tmp_path / "list.pth"
    torch.save([torch.ones(1)], plain)
    with pytest.raises(TorchFileError, match=r"list.pth holds a list, not a state_dict"):
        load_state_dict_file(plain)


# --------------------------------------------------------------------------------------
# Writing without torch


def test_written_file_loads_in_torch_and_into_the_module(tmp_path):
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ConvTranspose2d(4, 2, 4))
    with torch.no_grad():
        for p in net.parameters():
            p.uniform_(-1, 1)
    state = {k: v.numpy() for k, v in net.state_dict().items()}
    path = tmp_path / "written.pth"
    write_torch_file(state, path)
    loaded = torch.load(path, weights_only=True)
    assert list(loaded) == list(state)
    for key, value in state.items():
        assert loaded[key].shape == value.shape and loaded[key].dtype == net.state_dict()[key].dtype
        np.testing.assert_array_equal(loaded[key].numpy(), value)
    fresh = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ConvTranspose2d(4, 2, 4))
    fresh.load_state_dict(loaded, strict=True)
    x = torch.randn(1, 3, 8, 8)
    np.testing.assert_array_equal(fresh.eval()(x).detach().numpy(), net.eval()(x).detach().numpy())
    # And every dtype, a 0-d array, an empty one and a non-contiguous one, through both readers.
    import ml_dtypes

    arrays = {"f64": np.linspace(0, 1, 6).reshape(2, 3).T, "i64": np.array(5, np.int64),
              "bf16": np.array([1.5, -2.0], ml_dtypes.bfloat16), "u8": np.arange(3, dtype=np.uint8),
              "b": np.array([True, False]), "e": np.zeros((0, 2), np.float32),
              "f16": np.array([0.5], np.float16), "i32": np.array([-7], np.int32)}
    write_torch_file(arrays, tmp_path / "all.pth")
    loaded = torch.load(tmp_path / "all.pth", weights_only=True)
    ours = read_torch_file(tmp_path / "all.pth")
    for key, value in arrays.items():
        assert loaded[key].shape == value.shape
        np.testing.assert_array_equal(_numpy(loaded[key]), np.asarray(value, _numpy(loaded[key]).dtype))
        assert ours[key].dtype == value.dtype
        np.testing.assert_array_equal(ours[key], value)


def test_save_pth_is_torch_free_and_keeps_num_batches_tracked_int64(tmp_path):
    path = tmp_path / "bn.pth"
    torch_io.save_pth({"1.weight": np.ones(4, np.float32),
                       "1.num_batches_tracked": np.array(3, np.int32)}, str(path))
    loaded = torch.load(path, weights_only=True)
    assert loaded["1.num_batches_tracked"].dtype == torch.int64
    assert loaded["1.num_batches_tracked"].shape == ()
    code = ("import sys; sys.modules['torch'] = None; import numpy as np; "
            "from unpaired import torch_io; "
            f"torch_io.save_pth({{'w': np.arange(3, dtype=np.float32)}}, {str(tmp_path / 'nt.pth')!r}); "
            f"print(torch_io.load_pth({str(tmp_path / 'nt.pth')!r})['w'].tolist())")
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[0.0, 1.0, 2.0]"
    np.testing.assert_array_equal(torch.load(tmp_path / "nt.pth", weights_only=True)["w"].numpy(),
                                  np.arange(3, dtype=np.float32))
