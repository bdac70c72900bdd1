"""Fetching the public data and weights the presets use into the data root (`python -m launch.fetch`).

`fetch(["mnist", "usps"])` downloads each name's files (resuming partial downloads), checks
them against their published checksums, and installs them in the layout of
`unpaired.data.cache` (MNIST/USPS as gzip IDX files, CycleGAN datasets as trainA/... folders,
pretrained generators as .pth files). `source=` takes the files from a folder instead of the
network (machines without internet); `mirror=` downloads `<mirror>/<file name>` instead of
the published URL (a local mirror; the tests' loopback server). Names: `catalog.CATALOG`.
"""

from __future__ import annotations

import os
import sys
from typing import Iterable, Mapping, TextIO

from unpaired.data import cache
from unpaired.fetch.catalog import CATALOG, Entry, Remote
from unpaired.fetch.download import FetchError, download, set_aside, verify
from unpaired.fetch.install import install, installed, target

__all__ = ["CATALOG", "Entry", "FetchError", "Remote", "fetch", "listing", "resolve"]

DOWNLOADS = "downloads"  # <root>/downloads/: files being downloaded (.part) and set aside (.bad)


def resolve(names: Iterable[str], catalog: Mapping[str, Entry] = CATALOG) -> list[Entry]:
    """The catalog entries of `names` (in order, each once); FetchError naming any unknown one."""
    names = list(dict.fromkeys(names))
    unknown = [n for n in names if n not in catalog]
    if unknown:
        raise FetchError(f"unknown name(s) {', '.join(unknown)}; python -m launch.fetch --list shows "
                         f"the {len(catalog)} names")
    if not names:
        raise FetchError("no names given; python -m launch.fetch --list shows them")
    return [catalog[n] for n in names]


def _from_source(remote: Remote, source: str) -> str:
    """The already-downloaded file for `remote` in `source` (that file itself, or a folder holding it)."""
    if not os.path.exists(source):
        raise FetchError(f"--from={source} does not exist")
    if os.path.isfile(source) and os.path.basename(source) == remote.filename:
        return source
    candidate = os.path.join(source, remote.filename)
    if os.path.isdir(source) and os.path.isfile(candidate):
        return candidate
    raise FetchError(f"--from={source} has no {remote.filename} (download {remote.url} "
                     "there, or name the folder that has it)")


def _obtain(remote: Remote, root: str, source: str | None, mirror: str | None, log: TextIO) -> tuple[str, bool]:
    """A checked local copy of `remote`: (path, whether it is our download, to delete once installed)."""
    if source:
        path = _from_source(remote, source)
        verify(path, remote, log=log)  # a user's file that fails is left where it is
        return path, False
    folder = os.path.join(root, DOWNLOADS)
    os.makedirs(folder, exist_ok=True)
    dest = os.path.join(folder, remote.filename)
    if not os.path.isfile(dest):
        url = f"{mirror.rstrip('/')}/{remote.filename}" if mirror else remote.url
        download(url, dest, log=log)
    try:
        verify(dest, remote, log=log)
    except FetchError as err:
        bad = set_aside(dest)
        raise FetchError(f"{err}; kept aside as {bad}, not used (delete it and run again, or "
                         "report a changed file)") from None
    return dest, True


def fetch(names: Iterable[str], *, root: str | None = None, source: str | None = None,
          mirror: str | None = None, catalog: Mapping[str, Entry] = CATALOG,
          log: TextIO = sys.stderr) -> dict[str, str]:
    """Fetches and installs `names` under `root` (default: the data root); returns name -> where it is.

    A name already in place is left as it is. Raises FetchError (one line) on an unknown name,
    an unreachable server, a checksum that differs or a file that does not convert.
    """
    root = os.path.abspath(os.path.expanduser(root or cache.data_root()))
    entries = resolve(names, catalog)
    done: dict[str, str] = {}
    for entry in entries:
        where = target(entry, root)
        if installed(entry, root):
            print(f"{entry.name}: already in {where}", file=log, flush=True)
            done[entry.name] = where
            continue
        files, ours = {}, []
        for remote in entry.files:
            path, downloaded = _obtain(remote, root, source, mirror, log)
            files[remote.filename] = path
            if downloaded:
                ours.append(path)
        done[entry.name] = install(entry, files, root)
        for path in ours:
            os.remove(path)
        print(f"{entry.name}: fetched into {where}", file=log, flush=True)
    return done


def listing(catalog: Mapping[str, Entry] = CATALOG, root: str | None = None) -> str:
    """A table of the names: fetched or not, download size, checksum checked, what each is."""
    root = root or cache.data_root()
    width = max(len(n) for n in catalog)
    rows = [f"data root: {root} (--data_root, or set {cache.ENV})", "",
            f"{'name':<{width}}  fetched  download  {'checksum':<17}  what"]
    for entry in catalog.values():
        sizes = [r.size for r in entry.files]
        size = f"{sum(sizes) / 1e6:,.0f} MB" if all(sizes) else "?"
        state = "yes" if installed(entry, root) else "no"
        rows.append(f"{entry.name:<{width}}  {state:<7}  {size:>8}  {entry.checksums:<17}  {entry.about}")
    return "\n".join(rows)
