"""Where fetched data lives: `$UNPAIRED_DATA`, else `$XDG_CACHE_HOME/unpaired` or `~/.cache/unpaired`.

`python -m launch.fetch NAME` (`unpaired.fetch`) writes there and the real-data presets read
from there, so this module is the one statement of the layout:

    <root>/mnist/, <root>/usps/        {train,t10k}-{images-idx3,labels-idx1}-ubyte.gz
    <root>/cyclegan/<name>/            trainA/ trainB/ testA/ testB/ (a CycleGAN dataset)
    <root>/weights/cyclegan/<name>.pth an official pretrained CycleGAN generator

The root is read when asked (a config built after `UNPAIRED_DATA` changes sees the change).
"""

from __future__ import annotations

import os
from typing import Iterable

ENV = "UNPAIRED_DATA"
DIGIT_SETS = ("mnist", "usps")
WEIGHTS_SUFFIX = ".pth"  # a fetch name ending in it names a weight file, not a dataset


def data_root() -> str:
    """The folder fetched data goes to and presets read from (absolute; not created here)."""
    explicit = os.environ.get(ENV, "").strip()
    if explicit:
        return os.path.abspath(os.path.expanduser(explicit))
    cache = os.environ.get("XDG_CACHE_HOME", "").strip() or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(os.path.abspath(cache), "unpaired")


def digits_folder(name: str, root: str | None = None) -> str:
    """The IDX folder of a fetched digit set (mnist, usps)."""
    return os.path.join(root or data_root(), name)


def digits_train_images(name: str, root: str | None = None) -> str:
    """The training image file of a fetched digit set: what the IDX presets' idx_A/idx_B name."""
    return os.path.join(digits_folder(name, root), "train-images-idx3-ubyte.gz")


def digits_train_pair(direction: str, root: str | None = None) -> tuple[str, str]:
    """(domain A's, domain B's) training image files of an MNIST <-> USPS preset: A is the
    source its name starts with (`mnist2usps...` or `usps2mnist...`)."""
    mnist, usps = digits_train_images("mnist", root), digits_train_images("usps", root)
    return (mnist, usps) if direction.startswith("mnist2usps") else (usps, mnist)


def cyclegan_folder(name: str, root: str | None = None) -> str:
    """A fetched CycleGAN dataset's folder (holding trainA/, trainB/, testA/, testB/)."""
    return os.path.join(root or data_root(), "cyclegan", name)


def weights_file(name: str, root: str | None = None) -> str:
    """A fetched official CycleGAN generator, e.g. weights_file('horse2zebra') -> .../horse2zebra.pth."""
    return os.path.join(root or data_root(), "weights", "cyclegan", name + WEIGHTS_SUFFIX)


def fetch_name(path: str, root: str | None = None) -> str | None:
    """The `launch.fetch` name whose files `path` is (or lies in), or None if it is not in the layout."""
    root = root or data_root()
    try:
        rel = os.path.relpath(os.path.abspath(os.path.expanduser(path)), root)
    except ValueError:  # another drive (Windows)
        return None
    parts = rel.split(os.sep)
    if parts[0] in DIGIT_SETS:
        return parts[0]
    if parts[0] == "cyclegan" and len(parts) > 1 and parts[1]:
        return parts[1]
    if parts[:2] == ["weights", "cyclegan"] and len(parts) > 2 and parts[2].endswith(WEIGHTS_SUFFIX):
        return parts[2]
    return None


def fetch_command(names: Iterable[str]) -> str:
    """How to get `names` into the data root, as one clause for an error message."""
    return (f"run python -m launch.fetch {' '.join(dict.fromkeys(names))} (or set {ENV} to a folder "
            "with that layout, docs/data.md)")


def missing_message(settings: Iterable[tuple[str, str]]) -> str | None:
    """One line for (config key, path) settings whose path does not exist, with the fetch command.

    None when every path exists or no missing one is a fetchable file of the data root (the
    caller's own "does not exist" message is then the right one).
    """
    missing = [(key, path, fetch_name(path)) for key, path in settings if path and not os.path.exists(path)]
    missing = [(key, path, name) for key, path, name in missing if name]
    if not missing:
        return None
    names = list(dict.fromkeys(name for _, _, name in missing))
    keys = ", ".join(key for key, _, _ in missing)
    return f"no {', '.join(names)} data in {data_root()} ({keys}): {fetch_command(names)}"
