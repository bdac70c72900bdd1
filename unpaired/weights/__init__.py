"""Official weight files read as data, never as code: PyTorch pickles and TensorFlow bundles.

Neither reader imports torch or TensorFlow; both return numpy arrays.
"""

from unpaired.weights.tf_bundle import (
    BundleEntry,
    BundleError,
    list_tf_checkpoint,
    read_tf_checkpoint,
)
from unpaired.weights.torch_pickle import (
    ModuleStandIn,
    StandIns,
    TorchFileError,
    UnsafePickleError,
    load_state_dict_file,
    module_state_dict,
    read_torch_file,
    torch_nn_classes,
)
from unpaired.weights.torch_writer import write_torch_dicts, write_torch_file

__all__ = [
    "BundleEntry", "BundleError", "list_tf_checkpoint", "read_tf_checkpoint",
    "ModuleStandIn", "StandIns", "TorchFileError", "UnsafePickleError",
    "load_state_dict_file", "module_state_dict", "read_torch_file", "torch_nn_classes",
    "write_torch_dicts",
    "write_torch_file",
]
