"""Where each named domain's images and labels are, from the config.data fields (no image reads).

Per-domain fields (`idx_A`, `idx_B_test`, ...) are what CycleGAN configs use; any other domain
name is an entry of a comma-separated `name=value` list (`idx='C=/data/c'`). Lists are plain
strings so they can be set with `--config.data.idx=C=/x,D=/y` on ml_collections' locked configs,
which refuse new keys such as `--config.data.idx_C`.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any

from unpaired.data import cache
from unpaired.data.builtin_digits import RENDERINGS
from unpaired.data.errors import DataError
from unpaired.data.spec import DataSpec

_MISSING = object()
# config.data fields with defaults; the source-specific paths have none.
DEFAULTS: dict[str, Any] = {
    "source": "digits", "image_size": 32, "preprocess": "resize_and_crop", "load_size": 286,
    "crop_size": 256, "no_flip": False, "serial_batches": False, "num_workers": 2,
    "bad_image": "skip", "tfds_name": None, "idx_A_test": None, "idx_B_test": None,
    "domains": "A,B", "idx": "", "idx_test": "", "idx_labels": "", "idx_test_labels": "", "digits": "",
    "image_resize": "bicubic",
    "holdout": 0,
}
# Standard MNIST-style file names, picked by split when an IDX path names a folder.
IDX_IMAGE_FILES = {"train": "train-images-idx3-ubyte", "test": "t10k-images-idx3-ubyte"}
_IMAGES_PART, _LABELS_PART = "-images-idx3-ubyte", "-labels-idx1-ubyte"
# The built-in rendering of a domain named by a letter when config.data.digits does not say.
DEFAULT_DIGIT_RENDERINGS = {"A": "handwritten", "B": "printed", "C": "thick", "D": "inverted"}
# The two domains the reference's folder layout and the tfds datasets hold.
PAIR_DOMAINS = ("A", "B")
_DOMAIN_NAME = re.compile(r"[A-Za-z0-9]+")


def get_field(cfg: Any, key: str) -> Any:
    """config.data.<key> from a ConfigDict, a mapping or any object; DataError if required and absent."""
    default = DEFAULTS.get(key, _MISSING)
    if isinstance(cfg, dict):
        value = cfg.get(key, default)
    else:
        try:
            value = getattr(cfg, key)
        except (AttributeError, KeyError):
            value = default
    if value is _MISSING or (value in (None, "") and key not in DEFAULTS):
        raise DataError(f"config.data.{key} must be set for config.data.source={get_field(cfg, 'source')!r}")
    return value


def _optional(cfg: Any, key: str) -> str:
    """config.data.<key> as a string, '' when absent or unset."""
    try:
        value = get_field(cfg, key)
    except DataError:
        return ""
    return "" if value is None else os.fspath(value)


def parse_domains(text: str, key: str = "config.data.domains") -> tuple[str, ...]:
    """Domain names from a comma-separated string ('A,B,C'): distinct, letters and digits only."""
    names = tuple(n.strip() for n in str(text).split(",") if n.strip())
    bad = [n for n in names if not _DOMAIN_NAME.fullmatch(n)]
    if not names or bad or len(set(names)) != len(names):
        raise DataError(
            f"{key}={text!r} must be distinct comma-separated domain names of letters and digits, e.g. 'A,B,C'"
        )
    return names


def parse_mapping(text: str, key: str) -> dict[str, str]:
    """A `name=value,name=value` string as a dict; DataError naming `key` if malformed."""
    out: dict[str, str] = {}
    for part in (p.strip() for p in str(text or "").split(",")):
        if not part:
            continue
        name, sep, value = part.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not _DOMAIN_NAME.fullmatch(name) or not value or name in out:
            raise DataError(
                f"config.data.{key}={text!r} must be comma-separated domain=value entries, "
                f"each domain once, e.g. 'C=/data/c'; bad entry {part!r}"
            )
        out[name] = value
    return out


@dataclasses.dataclass(frozen=True)
class Setting:
    """A domain's value from the config and the key it came from (for messages)."""

    key: str      # e.g. "config.data.idx_A" or "config.data.idx entry C"
    value: str    # "" when unset
    how: str      # how to set it, e.g. "set config.data.idx_A_test" or "add C=<path> to config.data.idx"


def domain_setting(cfg: Any, field: str, mapping: str, domain: str, what: str = "<path>") -> Setting:
    """The value of `field` (e.g. idx_A) or else the `mapping` entry for `domain`.

    A and B (the reference's domains) and any domain whose own field exists are named by the
    field; other domains by the mapping entry.
    """
    own = _optional(cfg, field)
    if own:
        return Setting(f"config.data.{field}", own, f"set config.data.{field}")
    entries = parse_mapping(_optional(cfg, mapping), mapping)
    if domain in entries:
        return Setting(f"config.data.{mapping} entry {domain}", entries[domain],
                       f"change {domain}=... in config.data.{mapping}")
    if domain in PAIR_DOMAINS or _has_field(cfg, field):
        return Setting(f"config.data.{field}", "", f"set config.data.{field}")
    return Setting(f"config.data.{mapping} entry {domain}", "",
                   f"add {domain}={what} to config.data.{mapping} (comma-separated name={what})")


def _has_field(cfg: Any, field: str) -> bool:
    """Whether the config defines `field` at all (set or not)."""
    return field in cfg if isinstance(cfg, dict) else hasattr(cfg, field)


def _missing(setting: Setting, cfg: Any, domain: str) -> DataError:
    """The error for a domain with no location."""
    return DataError(
        f"{setting.key} must be set for config.data.source={get_field(cfg, 'source')!r} "
        f"(the method needs domain {domain!r}): {setting.how}"
    )


def idx_image_path(cfg: Any, domain: str, split: str) -> tuple[Setting, str]:
    """(the setting used, the IDX image file) of a domain and split.

    The path may be a folder (the standard train-/t10k-images-idx3-ubyte[.gz] name is picked
    by split) or a file. For split 'test' the test setting (idx_<D>_test or an idx_test entry)
    wins when set; otherwise a file named train-* is swapped for its t10k-* sibling.
    """
    setting = domain_setting(cfg, f"idx_{domain}", "idx", domain)
    test = domain_setting(cfg, f"idx_{domain}_test", "idx_test", domain)
    from_test = split == "test" and bool(test.value)
    if from_test:
        setting = test
    if not setting.value:
        raise _missing(setting, cfg, domain)
    path = setting.value
    if os.path.isdir(path):
        for candidate in (IDX_IMAGE_FILES[split] + ".gz", IDX_IMAGE_FILES[split]):
            if os.path.isfile(os.path.join(path, candidate)):
                return setting, os.path.join(path, candidate)
        raise DataError(
            f"{setting.key}={path!r} is a folder without {IDX_IMAGE_FILES[split]}[.gz] (the {split} images)"
        )
    if not os.path.exists(path):
        raise DataError(f"{setting.key}={path!r} does not exist")
    if split == "test" and not from_test:
        folder, base = os.path.split(path)
        sibling = os.path.join(folder, "t10k-" + base[len("train-"):]) if base.startswith("train-") else None
        if sibling is None or not os.path.isfile(sibling):
            raise DataError(
                f"{setting.key}={path!r} is a single file with no t10k- sibling; for split 'test' "
                f"{test.how}, or point {setting.key} at a folder with train-/t10k- IDX files"
            )
        return setting, sibling
    return setting, path


def idx_labels_beside(image_path: str) -> list[str]:
    """The label files the MNIST naming puts beside an image file (train-images-idx3-ubyte[.gz])."""
    folder, base = os.path.split(image_path)
    stem = base[:-3] if base.endswith(".gz") else base
    if _IMAGES_PART not in stem:
        return []
    labels = stem.replace(_IMAGES_PART, _LABELS_PART)
    return [os.path.join(folder, labels + ".gz"), os.path.join(folder, labels)]


def idx_label_path(cfg: Any, domain: str, split: str, image: tuple[Setting, str]) -> str:
    """The IDX label file of a domain's images: named by the config, or beside the image file."""
    image_setting, image_path = image
    field, mapping = (f"idx_{domain}_labels", "idx_labels") if split == "train" else (
        f"idx_{domain}_test_labels", "idx_test_labels")
    setting = domain_setting(cfg, field, mapping, domain)
    if setting.value:
        if not os.path.isfile(setting.value):
            raise DataError(f"{setting.key}={setting.value!r} does not exist")
        return setting.value
    candidates = idx_labels_beside(image_path)
    for candidate in candidates:
        if os.path.isfile(candidate):
            return candidate
    expected = (f"expected {candidates[1]}[.gz] beside it" if candidates
                else "its name does not follow the MNIST naming *-images-idx3-ubyte")
    how = setting.how if setting.key.startswith(f"config.data.{mapping}") else (
        f"add {domain}=<label file> to config.data.{mapping}")
    raise DataError(
        f"no label file for {image_path!r} ({image_setting.key}; the method needs labels of domain "
        f"{domain!r}): {expected}; {how}"
    )


def digit_rendering(cfg: Any, domain: str) -> str:
    """The built-in rendering of a domain: a config.data.digits entry, its letter's default, or its name."""
    entries = parse_mapping(_optional(cfg, "digits"), "digits")
    name = entries.get(domain) or DEFAULT_DIGIT_RENDERINGS.get(domain) or (domain if domain in RENDERINGS else "")
    if name not in RENDERINGS:
        raise DataError(
            f"config.data.digits has no built-in rendering for domain {domain!r}"
            + (f" ({name!r} is not one)" if name else "")
            + f": add {domain}=<one of {', '.join(RENDERINGS)}> to config.data.digits"
        )
    return name


def folder_path(root: str, split: str, domain: str) -> str:
    """A domain's folder: the reference's <root>/<split><domain> when it exists, else <root>/<split>/<domain>."""
    joined = os.path.join(root, f"{split}{domain}")
    nested = os.path.join(root, split, domain)
    return nested if not os.path.isdir(joined) and os.path.isdir(nested) else joined


def check_fetched(cfg: Any, domains: tuple[str, ...]) -> None:
    """DataError with the `launch.fetch` command when domains' IDX paths are absent fetchable data.

    One line for all of them (a preset's MNIST and USPS alike); paths outside the data root's
    layout are left to the per-domain checks and their "does not exist".
    """
    settings = [domain_setting(cfg, f"idx_{d}", "idx", d) for d in domains]
    message = cache.missing_message((s.key, s.value) for s in settings)
    if message:
        raise DataError(message)


def check_locations(cfg: Any, spec: DataSpec, split: str = "train") -> None:
    """DataError naming the key of the first domain (or needed labels) the config does not locate.

    Reads no images: checks that each domain has a setting for config.data.source and, for
    domains whose labels the method needs, that a label file can be found.
    """
    kind = get_field(cfg, "source")
    if kind == "idx":
        check_fetched(cfg, spec.domains)
    for domain in spec.domains:
        if kind == "digits":
            digit_rendering(cfg, domain)
        elif kind == "idx":
            image = idx_image_path(cfg, domain, split) if domain in spec.labels else None
            if image is None:
                setting = domain_setting(cfg, f"idx_{domain}", "idx", domain)
                if not setting.value:
                    raise _missing(setting, cfg, domain)
            else:
                idx_label_path(cfg, domain, split, image)
        elif kind in ("folder", "tfds", "tfds_stock"):
            if kind != "folder" and domain not in PAIR_DOMAINS:
                raise DataError(
                    f"config.data.source={kind!r} holds only domains A and B (the method needs domain "
                    f"{domain!r}); use source='folder' with <dataroot>/<split>/{domain}/ or source='idx'"
                )
            if domain in spec.labels:
                raise DataError(
                    f"config.data.source={kind!r} has no labels (the method needs labels of domain "
                    f"{domain!r}); use source='idx' with label files or source='digits'"
                )
