"""What `launch.fetch` can fetch: each name's files, where they come from and how they are checked.

Checksums are the ones published by others, never computed here and written down as if
published (docs/data.md, "Checksums"):
- MNIST and the CycleGAN zips: SHA-256 from tensorflow_datasets' `url_checksums/mnist.txt`
  and `url_checksums/cycle_gan.txt` (4.9.10; the zips' hashes are the same as those TFDS
  recorded for the files' earlier home, people.eecs.berkeley.edu/~taesung_park/CycleGAN).
- USPS: no SHA-256 is published (the libsvm site gives none); torchvision's `datasets/usps.py`
  gives MD5s, which are checked.
- ae_photos, mini and the pretrained generators: no checksum is published anywhere we know
  of; the computed SHA-256 is printed with a warning so that a user can compare copies.
"""

from __future__ import annotations

import dataclasses

MNIST_URL = "https://storage.googleapis.com/cvdf-datasets/mnist/"  # the mirror TFDS and torchvision use
USPS_URL = "https://www.csie.ntu.edu.tw/~cjlin/libsvmtools/datasets/multiclass/"
CYCLEGAN_URL = "https://efrosgans.eecs.berkeley.edu/cyclegan/datasets/"
PRETRAINED_URL = "https://efrosgans.eecs.berkeley.edu/cyclegan/pretrained_models/"

TFDS = "sha256 (TFDS)"          # tensorflow_datasets/url_checksums/<dataset>.txt
TORCHVISION = "md5 (torchvision)"  # torchvision/datasets/usps.py
NONE = "none published"


@dataclasses.dataclass(frozen=True)
class Remote:
    """One file to download and the checksum it must have (None where none is published)."""

    url: str
    sha256: str | None = None
    md5: str | None = None  # only where an MD5 is all that is published
    size: int | None = None  # bytes, where published (for the listing)

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


@dataclasses.dataclass(frozen=True)
class Entry:
    """A fetchable name: its files, how they become the data root's layout, and for the listing."""

    name: str
    kind: str                    # "idx_gz" | "usps_libsvm" | "cyclegan_zip" | "weights"
    files: tuple[Remote, ...]
    about: str
    checksums: str               # which checksum is checked and who publishes it, or NONE


def _mnist() -> Entry:
    published = (  # file, bytes, sha256 (tensorflow_datasets url_checksums/mnist.txt)
        ("train-images-idx3-ubyte.gz", 9912422, "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
        ("train-labels-idx1-ubyte.gz", 28881, "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
        ("t10k-images-idx3-ubyte.gz", 1648877, "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
        ("t10k-labels-idx1-ubyte.gz", 4542, "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
    )
    return Entry("mnist", "idx_gz", tuple(Remote(MNIST_URL + f, sha256=h, size=n) for f, n, h in published),
                 "MNIST digits: 60,000 train + 10,000 test, 28x28 (IDX as published)", TFDS)


def _usps() -> Entry:
    return Entry("usps", "usps_libsvm", (
        Remote(USPS_URL + "usps.bz2", md5="ec16c51db3855ca6c91edd34d0e9b197"),
        Remote(USPS_URL + "usps.t.bz2", md5="8ea070ee2aca1ac39742fdd1ef5ed118"),
    ), "USPS digits: 7,291 train + 2,007 test, 16x16 (libsvm text -> IDX)", TORCHVISION)


# name -> (bytes, sha256) from tensorflow_datasets url_checksums/cycle_gan.txt; None: not in it.
_CYCLEGAN = {
    "apple2orange": (78456409, "845a191e9af8926408ea597001cd03a452e3300a1f44a79fe329b3d59f6e3eb8"),
    "summer2winter_yosemite": (132640856, "167fe1726807a9d22bd106b4a6c0bd7953b688af924ac1bf967439c4961e49f9"),
    "horse2zebra": (116867962, "a74d9d392eecca9966b51287a76ca126af473d9de4f3e8fc0e9cda08fa1730a1"),
    "monet2photo": (305231073, "88f91b00fc228f97c9411fbf1880ec1d119c98f1722e4cfcfaa2fb35fac05b04"),
    "cezanne2photo": (279885071, "3a6c10ca21f9485862f1cbd707744b9dc258954a04631271d23a3605eeb63cff"),
    "ukiyoe2photo": (292946532, "02a2a2fb5ecf425ca1bf86aca7304377da64a2a1d3b86df54eb65e4068bf3b08"),
    "vangogh2photo": (306590349, "362c3473e70be0944bda08d49d660eafdc2854df55d697835b8186d1d79caaff"),
    "maps": (1476754427, "639534f69dbf9f36bef8d6292a7698006361221f83f0285d7c9ca78afe6e8a9e"),
    "cityscapes": (279601602, "d2f6910fd056c1ee9873777ae838e7ac4a2c833598ae62a04188e5ab2f4ea036"),
    "facades": (35135868, "9a31ebf3a31b9b5cd195dd5bf62e9308e00cb94604d1019e3889ac84248695c0"),
    "iphone2dslr_flower": (339964458, "8fcb5e374d631b107e1d961b8c4cd0a186aa2a4ff3e279923f4c426128de7113"),
    "ae_photos": None,
    "mini": None,
}

# The official pretrained generators (the reference's scripts/download_cyclegan_model.sh); one
# direction each: resnet_9blocks, instance norm, no dropout (launch.translate's default config).
PRETRAINED = ("apple2orange", "orange2apple", "summer2winter_yosemite", "winter2summer_yosemite",
              "horse2zebra", "zebra2horse", "monet2photo", "style_monet", "style_cezanne",
              "style_ukiyoe", "style_vangogh", "sat2map", "map2sat", "cityscapes_photo2label",
              "cityscapes_label2photo", "facades_photo2label", "facades_label2photo",
              "iphone2dslr_flower")


def _cyclegan(name: str) -> Entry:
    published = _CYCLEGAN[name]
    size, sha256 = published or (None, None)
    return Entry(name, "cyclegan_zip", (Remote(f"{CYCLEGAN_URL}{name}.zip", sha256=sha256, size=size),),
                 "CycleGAN dataset: trainA/ trainB/ testA/ testB/", TFDS if published else NONE)


def _pretrained(name: str) -> Entry:
    return Entry(f"{name}.pth", "weights", (Remote(f"{PRETRAINED_URL}{name}.pth"),),
                 "official pretrained CycleGAN generator (one direction)", NONE)


def build_catalog() -> dict[str, Entry]:
    """Every fetchable name, in listing order: digit sets, CycleGAN datasets, pretrained generators."""
    entries = [_mnist(), _usps()] + [_cyclegan(n) for n in _CYCLEGAN] + [_pretrained(n) for n in PRETRAINED]
    return {e.name: e for e in entries}


CATALOG = build_catalog()
