r"""Fetches the public data and weights the presets use: `python -m launch.fetch NAME...`.

    python -m launch.fetch mnist usps            # the MNIST <-> USPS presets' data
    python -m launch.fetch horse2zebra           # a CycleGAN dataset (configs/cyclegan.py:horse2zebra)
    python -m launch.fetch horse2zebra.pth       # an official pretrained generator
    python -m launch.fetch --list                # every name, and which are fetched
    python -m launch.fetch mnist --from=/media/usb/downloads   # offline: files fetched elsewhere

Into --data_root (default `$UNPAIRED_DATA`, else `$XDG_CACHE_HOME/unpaired` or
`~/.cache/unpaired`), which the presets read. Every file is checked against its published
checksum (docs/data.md); partial downloads resume. Errors end in one `error:` line.
"""

from __future__ import annotations

import sys

from absl import app, flags

from unpaired import fetch as fetcher
from unpaired.data import cache

_DATA_ROOT = flags.DEFINE_string(
    "data_root", None, f"Where to put the data (default: ${cache.ENV}, else the user's cache "
    "folder, ~/.cache/unpaired); the presets read the same folder.")
flags.DEFINE_string("from", None, "Offline: a folder (or one file) holding the files already "
                    "downloaded elsewhere (train-images-idx3-ubyte.gz, usps.bz2, horse2zebra.zip, ...); "
                    "they are checked like downloads, never changed.")
_MIRROR = flags.DEFINE_string("mirror", None, "Download <mirror>/<file name> instead of each "
                              "file's published URL (a local mirror); checksums still apply.")
_LIST = flags.DEFINE_bool("list", False, "List the names, their sources and checksums, and exit.")


def main(argv: list[str]) -> None:
    names = argv[1:]
    if _LIST.value:
        print(fetcher.listing(root=_DATA_ROOT.value))
        return
    try:
        done = fetcher.fetch(names, root=_DATA_ROOT.value, source=flags.FLAGS["from"].value,
                             mirror=_MIRROR.value)
    except fetcher.FetchError as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr, flush=True)
        sys.exit(1)
    except KeyboardInterrupt:
        print("error: interrupted; run the same command again to resume", file=sys.stderr, flush=True)
        sys.exit(130)
    for name, where in done.items():
        if name.endswith(cache.WEIGHTS_SUFFIX):
            print(f"translate with: python -m launch.translate --checkpoint={where} "
                  "--input=<image or folder> --output=<folder>")


if __name__ == "__main__":
    app.run(main)
