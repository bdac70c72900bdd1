"""PyTorch `.pth` files read without torch, as data: tensors come back as numpy arrays.

Both on-disk formats are read: the zip archive of torch >= 1.6 (`<archive>/data.pkl` plus
one record per storage) and the legacy stream of older releases (magic number, protocol,
sys_info, the object pickle, the storage keys, then each storage as an 8-byte element count
and its bytes). The pickle goes through a restricted unpickler: only tensor rebuild
functions, storage types, OrderedDict, plain containers and the stand-in classes a caller
names explicitly are resolved; any other global is refused before anything runs.
"""

from __future__ import annotations

import _compat_pickle
import collections
import io
import os
import pickle
import struct
import zipfile
from typing import Any, BinaryIO, Callable, Iterable, Mapping

import ml_dtypes
import numpy as np

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

_STORAGE_DTYPES = {
    "FloatStorage": np.dtype(np.float32),
    "DoubleStorage": np.dtype(np.float64),
    "HalfStorage": np.dtype(np.float16),
    "BFloat16Storage": np.dtype(ml_dtypes.bfloat16),
    "LongStorage": np.dtype(np.int64),
    "IntStorage": np.dtype(np.int32),
    "ShortStorage": np.dtype(np.int16),
    "CharStorage": np.dtype(np.int8),
    "ByteStorage": np.dtype(np.uint8),
    "BoolStorage": np.dtype(np.bool_),
    "ComplexFloatStorage": np.dtype(np.complex64),
    "ComplexDoubleStorage": np.dtype(np.complex128),
    "UntypedStorage": np.dtype(np.uint8),
}
# Where a storage type may be named: `torch.FloatStorage`; pre-1.0 CUDA files may name
# `torch.cuda.FloatStorage`; raw storages are `torch.UntypedStorage` / `torch.storage.*`.
_STORAGE_MODULES = ("torch", "torch.cuda", "torch.storage")
_BUILTINS = {"set": set, "frozenset": frozenset, "list": list, "dict": dict, "tuple": tuple,
             "complex": complex, "bytearray": bytearray}

# torch.nn layer classes a pickled whole module may contain (their modules as torch names them).
_NN_LAYERS = {
    "module": ("Module",),
    "conv": ("Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d"),
    "batchnorm": ("BatchNorm1d", "BatchNorm2d", "BatchNorm3d"),
    "instancenorm": ("InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d"),
    "normalization": ("LayerNorm", "GroupNorm"),
    "linear": ("Linear", "Identity"),
    "container": ("Sequential", "ModuleList", "ModuleDict"),
    "activation": ("ReLU", "ReLU6", "LeakyReLU", "PReLU", "ELU", "Tanh", "Sigmoid", "Softmax",
                   "LogSoftmax", "Hardtanh"),
    "dropout": ("Dropout", "Dropout2d"),
    "padding": ("ReflectionPad2d", "ReplicationPad2d", "ZeroPad2d"),
    "pooling": ("MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d"),
    "upsampling": ("Upsample",),
    "flatten": ("Flatten",),
}
# torch 0.4 pickled each module's `_backend` as a call of this function; read as None.
_THNN_BACKEND = "torch.nn.backends.thnn._get_thnn_function_backend"


class TorchFileError(ValueError):
    """A file is not a PyTorch checkpoint we can read; the message names the file."""


class UnsafePickleError(TorchFileError):
    """The pickle names a global that is not allowed; the message names it and the file."""


class ModuleStandIn:
    """What a pickled `nn.Module` of an allowed class becomes: its pickled attributes, no code.

    `torch_class` is the class's `module.Name` as written in the file.
    """

    torch_class = ""

    def __new__(cls, *args: Any, **kwargs: Any) -> "ModuleStandIn":
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict, slots) from __reduce_ex__
            state = {**(state[0] or {}), **(state[1] or {})}
        if not isinstance(state, dict):
            raise TorchFileError(f"{self.torch_class} has a pickled state of type {type(state).__name__}")
        self.__dict__.update(state)

    def __repr__(self) -> str:
        return f"<ModuleStandIn {self.torch_class}>"


def torch_nn_classes() -> tuple[str, ...]:
    """`module.Name` of the torch.nn layers (and torch 0.4's backend hook) whole modules hold."""
    names = [f"torch.nn.modules.{module}.{name}"
             for module, classes in _NN_LAYERS.items() for name in classes]
    return tuple(names) + (_THNN_BACKEND,)


class StandIns:
    """The classes one read trusts to appear in a pickled module, each read as a ModuleStandIn.

    Explicit per call (no global registry): `StandIns(["src.ufdn.UFDN"])` also allows the
    torch.nn layers of :func:`torch_nn_classes` unless `torch_nn=False`.
    """

    def __init__(self, classes: Iterable[str] = (), *, torch_nn: bool = True) -> None:
        names = set(classes) | (set(torch_nn_classes()) if torch_nn else set())
        for name in names:
            if "." not in name:
                raise ValueError(f"stand-in class {name!r} must be written as 'module.Name'")
        self.names = frozenset(names)

    def __contains__(self, name: str) -> bool:
        return name in self.names


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """`_codecs.encode` as protocol-2 pickles use it for bytes; only latin-1 is accepted."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise TorchFileError(f"refusing _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


def _as_tensor(storage: np.ndarray, offset: int, size: Any, stride: Any, source: str) -> np.ndarray:
    """A numpy view of `storage` with torch's (offset, size, stride) in elements, bounds-checked."""
    # A storage is a contiguous 1-D array, so the bounds check below is a check in bytes too
    # (a crafted pickle could pass a stride-0 tensor as the storage of another tensor).
    if (not isinstance(storage, np.ndarray) or storage.ndim != 1
            or (storage.size > 1 and storage.strides != (storage.itemsize,))):
        raise TorchFileError(f"{source}: a tensor is built on {type(storage).__name__}, not a storage")
    shape = tuple(int(n) for n in size)
    strides = tuple(int(s) for s in stride)
    if len(strides) != len(shape) or any(n < 0 for n in shape) or any(s < 0 for s in strides):
        raise TorchFileError(f"{source}: a tensor has size {shape} and stride {strides}")
    if 0 in shape:
        return np.zeros(shape, storage.dtype)
    last = int(offset) + sum((n - 1) * s for n, s in zip(shape, strides))
    if offset < 0 or last >= storage.size:
        raise TorchFileError(
            f"{source}: a tensor of size {shape}, stride {strides}, offset {offset} "
            f"reaches past its storage of {storage.size} elements")
    item = storage.dtype.itemsize
    return np.lib.stride_tricks.as_strided(
        storage[int(offset):], shape=shape, strides=tuple(s * item for s in strides))


class _StorageType:
    """A storage class named in the pickle: only its element dtype matters."""

    def __init__(self, name: str, dtype: np.dtype) -> None:
        self.name, self.dtype = name, dtype


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only allowed globals; storages come from `load_storage` by persistent id."""

    def __init__(self, file: BinaryIO, source: str, stand_ins: StandIns | None,
                 load_storage: Callable[..., np.ndarray] | None = None) -> None:
        super().__init__(file, encoding="utf-8")
        self._source = source
        self._stand_ins = stand_ins
        self._load_storage = load_storage
        self._classes: dict[str, type] = {}
        self._allowed = {
            "collections.OrderedDict": collections.OrderedDict,
            "torch._utils._rebuild_tensor": self._rebuild_tensor,
            "torch._utils._rebuild_tensor_v2": self._rebuild_tensor_v2,
            "torch._utils._rebuild_parameter": self._rebuild_parameter,
            "torch._utils._rebuild_parameter_with_state": self._rebuild_parameter,
            "torch.Size": tuple,
            "_codecs.encode": _latin1_encode,
        }

    def _rebuild_tensor(self, storage, offset, size, stride) -> np.ndarray:
        return _as_tensor(storage, offset, size, stride, self._source)

    def _rebuild_tensor_v2(self, storage, offset, size, stride, requires_grad=False,
                           backward_hooks=None, metadata=None) -> np.ndarray:
        return _as_tensor(storage, offset, size, stride, self._source)

    @staticmethod
    def _rebuild_parameter(data, requires_grad=True, backward_hooks=None, state=None) -> np.ndarray:
        return data

    def find_class(self, module: str, name: str) -> Any:
        # Python 2 names (protocol 2 writes `__builtin__`) as Python 3 spells them.
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if module == "builtins" and name in _BUILTINS:
            return _BUILTINS[name]
        full = f"{module}.{name}"
        if full in self._allowed:
            return self._allowed[full]
        if module in _STORAGE_MODULES and name in _STORAGE_DTYPES:
            return _StorageType(full, _STORAGE_DTYPES[name])
        if self._stand_ins is not None and full in self._stand_ins:
            if full == _THNN_BACKEND:
                return _no_backend
            if full not in self._classes:
                self._classes[full] = type(name, (ModuleStandIn,), {"torch_class": full})
            return self._classes[full]
        hint = (f" (if it is a module class of a file you trust, allow it with "
                f"stand_ins=StandIns(['{full}']))" if name[:1].isupper() else "")
        raise UnsafePickleError(
            f"{self._source}: refusing to load global '{full}'; only tensors, containers and "
            f"allowed stand-in classes are read{hint}")

    def persistent_load(self, pid: Any) -> Any:
        if not isinstance(pid, tuple) or not pid:
            raise TorchFileError(f"{self._source}: unexpected persistent id {pid!r}")
        kind = pid[0].decode("ascii") if isinstance(pid[0], bytes) else pid[0]
        if kind == "module" and len(pid) == 4:  # legacy whole-module saves: (tag, class, file, source)
            return pid[1]
        if (kind == "storage" and self._load_storage is not None and isinstance(pid[1], _StorageType)
                and pid[1].dtype in _STORAGE_DTYPES.values()):
            return self._load_storage(*pid[1:])
        raise TorchFileError(f"{self._source}: unexpected persistent id {pid[:1]!r}")


def _no_backend() -> None:
    return None


def _key(key: Any) -> str:
    return key.decode("ascii") if isinstance(key, bytes) else str(key)


def _check_location(location: Any, source: str) -> None:
    """Every device tag (`cpu`, `cuda`, `cuda:0`, ...) maps to host memory; it must be a string."""
    if not isinstance(location, (str, bytes)):
        raise TorchFileError(f"{source}: a storage has location {location!r}")


def _read_zip(path: str, stand_ins: StandIns | None) -> Any:
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
        if not pickles:
            extra = " (a TorchScript archive?)" if any(n.endswith("/constants.pkl") for n in names) else ""
            raise TorchFileError(f"{path}: a zip file without <archive>/data.pkl{extra}")
        prefix = pickles[0][: -len("data.pkl")]
        byteorder = "little"
        if prefix + "byteorder" in names:
            byteorder = archive.read(prefix + "byteorder").decode("ascii").strip()
        storages: dict[str, np.ndarray] = {}

        def load_storage(storage_type: _StorageType, key: Any, location: Any, numel: int,
                         *unused: Any) -> np.ndarray:
            key = _key(key)
            _check_location(location, path)
            if key not in storages:
                record = f"{prefix}data/{key}"
                if record not in names:
                    raise TorchFileError(f"{path}: storage record {record} is missing")
                raw = bytearray(archive.read(record))
                dtype = storage_type.dtype
                if len(raw) % dtype.itemsize or (numel is not None and len(raw) < numel * dtype.itemsize):
                    raise TorchFileError(
                        f"{path}: storage {record} holds {len(raw)} bytes, not {numel} x {dtype}")
                storages[key] = _native(np.frombuffer(raw, dtype), byteorder)
            return storages[key]

        data = io.BytesIO(archive.read(pickles[0]))
        return _RestrictedUnpickler(data, path, stand_ins, load_storage).load()


def _native(array: np.ndarray, byteorder: str) -> np.ndarray:
    if byteorder not in ("little", "big"):
        raise TorchFileError(f"unknown byteorder {byteorder!r}")
    if (byteorder == "big") != (np.little_endian is False) and array.dtype.itemsize > 1:
        array.view(f"u{array.dtype.itemsize}").byteswap(inplace=True)
    return array


def _read_legacy(path: str, stand_ins: StandIns | None) -> Any:
    with open(path, "rb") as f:
        def plain() -> Any:
            return _RestrictedUnpickler(f, path, None).load()

        try:
            magic = plain()
        except (pickle.UnpicklingError, EOFError, ValueError) as err:
            if isinstance(err, TorchFileError):
                raise
            raise TorchFileError(f"{path} is neither a zip nor a legacy PyTorch file: {err}") from err
        if magic != _LEGACY_MAGIC:
            raise TorchFileError(f"{path} is neither a zip nor a legacy PyTorch file (bad magic number)")
        protocol = plain()
        if protocol != _LEGACY_PROTOCOL:
            raise TorchFileError(f"{path}: legacy protocol {protocol!r}, expected {_LEGACY_PROTOCOL}")
        sys_info = plain()
        little = sys_info.get("little_endian", True) if isinstance(sys_info, dict) else True
        roots: dict[str, np.ndarray] = {}
        views: dict[str, np.ndarray] = {}

        def load_storage(storage_type: _StorageType, key: Any, location: Any, numel: int,
                         view_metadata: Any = None) -> np.ndarray:
            key = _key(key)
            _check_location(location, path)
            if key not in roots:
                roots[key] = np.empty(int(numel), storage_type.dtype)  # filled after the pickle
            if view_metadata is None:
                return roots[key]
            view_key, offset, view_size = view_metadata
            view_key = _key(view_key)
            if view_key not in views:
                views[view_key] = roots[key][int(offset): int(offset) + int(view_size)]
            return views[view_key]

        result = _RestrictedUnpickler(f, path, stand_ins, load_storage).load()
        keys = plain()
        if not isinstance(keys, list):
            raise TorchFileError(f"{path}: the storage key list is a {type(keys).__name__}")
        for key in keys:
            key = _key(key)
            if key not in roots:
                raise TorchFileError(f"{path}: storage {key} is listed but no tensor uses it")
            buffer = roots[key]
            header = f.read(8)
            if len(header) != 8:
                raise TorchFileError(f"{path}: storage {key} is cut short")
            (count,) = struct.unpack("<q" if little else ">q", header)
            if count != buffer.size:
                raise TorchFileError(f"{path}: storage {key} holds {count} elements, expected {buffer.size}")
            view = memoryview(buffer.view(np.uint8))
            if f.readinto(view) != buffer.nbytes:
                raise TorchFileError(f"{path}: storage {key} is cut short")
            _native(buffer, "little" if little else "big")
        return result


def read_torch_file(path: str | os.PathLike, *, stand_ins: StandIns | None = None) -> Any:
    """The object a `torch.save` file holds, tensors as numpy arrays; no pickled code runs.

    Whole pickled modules need their classes in `stand_ins` (see :class:`StandIns`); they
    come back as :class:`ModuleStandIn` objects for :func:`module_state_dict`.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file")
    try:
        if zipfile.is_zipfile(path):
            return _read_zip(path, stand_ins)
        return _read_legacy(path, stand_ins)
    except TorchFileError:
        raise
    except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, struct.error,
            TypeError, AttributeError, IndexError, KeyError, ValueError) as err:
        raise TorchFileError(f"{path} is not a readable PyTorch file: {type(err).__name__}: {err}") from err


def module_state_dict(module: ModuleStandIn, prefix: str = "") -> dict[str, np.ndarray]:
    """The state_dict `module.state_dict()` would give, from a stand-in's pickled attributes."""
    if not isinstance(module, ModuleStandIn):
        raise TypeError(f"expected a ModuleStandIn, got {type(module).__name__}")
    out: dict[str, np.ndarray] = {}
    attrs = module.__dict__
    for name, value in attrs.get("_parameters", {}).items():
        if value is not None:
            out[prefix + name] = value
    skipped = attrs.get("_non_persistent_buffers_set", set())
    for name, value in attrs.get("_buffers", {}).items():
        if value is not None and name not in skipped:
            out[prefix + name] = value
    for name, child in attrs.get("_modules", {}).items():
        if child is not None:
            out.update(module_state_dict(child, f"{prefix}{name}."))
    return out


def load_state_dict_file(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A `.pth` state_dict (or `{'state_dict': ...}`) as fresh numpy arrays, without torch."""
    obj = read_torch_file(path)
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise TorchFileError(f"{os.fspath(path)} holds a {type(obj).__name__}, not a state_dict")
    out = {}
    for key, value in obj.items():
        if not isinstance(value, (np.ndarray, int, float, bool)):
            raise TorchFileError(f"{os.fspath(path)}: state_dict entry {key!r} is a {type(value).__name__}")
        out[str(key)] = np.array(value, copy=True)
    return out
