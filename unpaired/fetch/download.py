"""Resumable HTTP downloads and checksum checks, with errors that fit on one line.

A download streams into `<file>.part`; an interrupted one is resumed from the bytes already
there (an HTTP Range request; a server that ignores it restarts the file). A file whose
checksum differs is renamed `<file>.bad` and never used.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import urllib.error
import urllib.request
from typing import TextIO

from unpaired.fetch.catalog import Remote

CHUNK = 1 << 20
TIMEOUT_S = 60
USER_AGENT = "unpaired-fetch/1"


class FetchError(RuntimeError):
    """A download or install that cannot go on; the message is one line for the user."""


def file_digest(path: str, algorithm: str) -> str:
    """The hex digest (sha256, md5) of a file, read in chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(path: str, remote: Remote, *, log: TextIO = sys.stderr) -> str:
    """Checks `path` against the published checksum; returns its sha256.

    FetchError when it differs. With no published checksum, the computed sha256 is printed
    as a warning (compare it with a copy you trust).
    """
    sha256 = file_digest(path, "sha256")
    for algorithm, want, got in (("sha256", remote.sha256, sha256),
                                 ("md5", remote.md5, file_digest(path, "md5") if remote.md5 else None)):
        if want and got != want.lower():
            raise FetchError(f"{path}: {algorithm} {got} differs from the published {want} "
                             f"(from {remote.url})")
    if not remote.sha256 and not remote.md5:
        print(f"warning: no published checksum for {remote.filename}; its sha256 is {sha256}",
              file=log, flush=True)
    return sha256


def set_aside(path: str) -> str:
    """Renames a file that failed its check to `<path>.bad` (replacing an older one); returns the name."""
    bad = path + ".bad"
    os.replace(path, bad)
    return bad


def _progress(total: int | None, done: int, name: str):
    """A tqdm bar on an interactive stderr; a do-nothing stand-in otherwise (logs stay clean)."""
    from tqdm import tqdm  # pylint: disable=import-outside-toplevel

    return tqdm(total=total, initial=done, unit="B", unit_scale=True, unit_divisor=1024,
                desc=name, disable=None, leave=False, file=sys.stderr)


def _open(url: str, start: int):
    """The response for `url` from byte `start` (a Range request when > 0); FetchError if unreachable."""
    headers = {"User-Agent": USER_AGENT}
    if start:
        headers["Range"] = f"bytes={start}-"
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=TIMEOUT_S)
    except urllib.error.HTTPError as err:
        if err.code == 416 and start:  # the range starts at the end: the .part is already whole
            return None
        raise FetchError(f"cannot download {url}: HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise FetchError(f"cannot reach {url}: {reason} (offline? download the file elsewhere and "
                         "pass --from=<its folder>)") from None


def download(url: str, dest: str, *, log: TextIO = sys.stderr) -> str:
    """Downloads `url` to `dest` through `dest.part`, resuming a partial one; returns `dest`."""
    part = dest + ".part"
    start = os.path.getsize(part) if os.path.isfile(part) else 0
    response = _open(url, start)
    if response is not None:
        with response:
            resumed = start and response.status == 206
            if start and not resumed:
                start = 0  # the server sent the whole file: start again
            length = response.headers.get("Content-Length")
            total = start + int(length) if length and length.isdigit() else None
            print(f"downloading {url}" + (f" (resuming at {start} bytes)" if start else ""),
                  file=log, flush=True)
            done = start
            try:
                with open(part, "ab" if start else "wb") as f, _progress(total, start, os.path.basename(dest)) as bar:
                    for block in iter(lambda: response.read(CHUNK), b""):
                        f.write(block)
                        done += len(block)
                        bar.update(len(block))
            except (OSError, http.client.HTTPException) as err:
                raise FetchError(f"download of {url} stopped after {done} bytes ({err}); run the same "
                                 f"command again to resume from {part}") from None
            if total is not None and done < total:
                raise FetchError(f"download of {url} stopped after {done} of {total} bytes; run the "
                                 f"same command again to resume from {part}")
    os.replace(part, dest)
    return dest
