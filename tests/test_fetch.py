"""`launch.fetch` against a loopback HTTP server (with Range support) serving tiny files in the
real formats: gzip IDX (MNIST), libsvm bz2 (USPS), a CycleGAN zip, a .pth. No internet.

Covers installing and converting (read back by the IDX loaders), resuming a partial download,
a checksum that differs and an unreachable server (one `error:` line each, the bad file set
aside), `--from` (offline), the presets' one-line "fetch it" error, and the issue's end to
end: MNIST and USPS fetched from the server, then a real-data preset trains on them.
"""

from __future__ import annotations

import bz2
import dataclasses
import gzip
import hashlib
import http.server
import io
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import zipfile

import numpy as np
import pytest
from PIL import Image

from configs import cyclegan as cyclegan_config
from configs import classifier as classifier_config
from configs import dtn as dtn_config
from configs import ufdn as ufdn_config
from configs import unit as unit_config
from tests.overrides import set_keys
from unpaired import config_validation, fetch, train
from unpaired.data import DataError, cache, list_images, make_loader, read_idx
from unpaired.fetch import catalog

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RNG = np.random.default_rng(0)
MNIST = {"train": 12, "t10k": 6}   # images per split
USPS = {"train": 10, "t10k": 5}


def _idx(array: np.ndarray) -> bytes:
    """IDX bytes written independently of unpaired.data.idx (the test's own writer)."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def _libsvm(images: np.ndarray, labels: np.ndarray, omit: int | None = None) -> bytes:
    """USPS's libsvm text: '<label 1..10> 1:v ... 256:v', v = 2u/255 - 1 with 6 decimals."""
    lines = []
    for k, (image, label) in enumerate(zip(images, labels)):
        values = image.reshape(-1).astype(np.float64) / 255.0 * 2.0 - 1.0
        fields = [f"{i + 1}:{v:.6f}" for i, v in enumerate(values) if not (k == 0 and i == omit)]
        lines.append(f"{int(label) + 1} " + " ".join(fields))
    return bz2.compress(("\n".join(lines) + "\n").encode())


def _png(value: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (value, 0, 0)).save(out, format="PNG")
    return out.getvalue()


def _zip(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return out.getvalue()


def _make_files():
    """{file name: bytes} for the server, and the arrays the installs must hold."""
    files, expected = {}, {}
    for split, n in MNIST.items():
        images = RNG.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = RNG.integers(0, 10, n, dtype=np.uint8)
        files[f"{split}-images-idx3-ubyte.gz"] = gzip.compress(_idx(images))
        files[f"{split}-labels-idx1-ubyte.gz"] = gzip.compress(_idx(labels))
        expected["mnist", split] = images, labels
    for name, (split, n) in zip(("usps.bz2", "usps.t.bz2"), USPS.items()):
        images = RNG.integers(0, 256, (n, 16, 16), dtype=np.uint8)
        labels = np.arange(n, dtype=np.uint8) % 10
        files[name] = _libsvm(images, labels, omit=5)
        images = images.copy()
        images[0].reshape(-1)[5] = 128  # an omitted libsvm feature is 0 in [-1, 1]: round(127.5) = 128
        expected["usps", split] = images, labels
    files["horse2zebra.zip"] = _zip({f"horse2zebra/{d}/{i}.png": _png(i) for d in
                                     ("trainA", "trainB", "testA", "testB") for i in range(2)})
    files["horse2zebra.pth"] = b"not really a state_dict"
    return files, expected


FILES, EXPECTED = _make_files()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _test_catalog() -> dict[str, catalog.Entry]:
    """The real catalog's entries (names, kinds, file names) with this test's files' checksums;
    USPS keeps an MD5 (its published kind), the .pth none."""
    out = {}
    for name in ("mnist", "usps", "horse2zebra", "horse2zebra.pth"):
        entry = catalog.CATALOG[name]
        files = []
        for r in entry.files:
            data = FILES[r.filename]
            if r.md5:
                files.append(dataclasses.replace(r, md5=hashlib.md5(data).hexdigest()))
            elif r.sha256:
                files.append(dataclasses.replace(r, sha256=_sha256(data)))
            else:
                files.append(r)
        out[name] = dataclasses.replace(entry, files=tuple(files))
    return out


CATALOG = _test_catalog()


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves FILES by name; honours `Range: bytes=N-` with a 206; records each request."""

    def do_GET(self):  # noqa: N802
        name = self.path.rsplit("/", 1)[-1]
        self.server.requests.append((name, self.headers.get("Range")))
        if name not in FILES:
            self.send_error(404)
            return
        data, status = FILES[name], 200
        ranged = self.headers.get("Range", "")
        if ranged.startswith("bytes=") and ranged.endswith("-"):
            start = int(ranged[6:-1])
            if start >= len(data):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            data, status = data[start:], 206
        else:
            self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):  # quiet
        pass


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.requests = []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _url(httpd) -> str:
    return f"http://127.0.0.1:{httpd.server_address[1]}/files"


@pytest.fixture(scope="module")
def fetched(server, tmp_path_factory):
    """MNIST and USPS fetched once from the loopback server into a fresh data root."""
    root = str(tmp_path_factory.mktemp("data_root"))
    log = io.StringIO()
    done = fetch.fetch(["mnist", "usps"], root=root, mirror=_url(server), catalog=CATALOG, log=log)
    return root, done, log.getvalue()


def test_mnist_and_usps_are_installed_as_idx_files_the_loaders_read(fetched):
    root, done, log = fetched
    assert done == {"mnist": os.path.join(root, "mnist"), "usps": os.path.join(root, "usps")}
    for (name, split), (images, labels) in EXPECTED.items():
        folder = os.path.join(root, name)
        assert np.array_equal(read_idx(os.path.join(folder, f"{split}-images-idx3-ubyte.gz")), images)
        assert np.array_equal(read_idx(os.path.join(folder, f"{split}-labels-idx1-ubyte.gz")), labels)
    # MNIST's files are the published ones, byte for byte; downloads are not kept.
    with open(os.path.join(root, "mnist", "train-images-idx3-ubyte.gz"), "rb") as f:
        assert f.read() == FILES["train-images-idx3-ubyte.gz"]
    assert os.listdir(os.path.join(root, fetch.DOWNLOADS)) == []
    assert "mnist: fetched into" in log and "warning" not in log
    again = io.StringIO()
    fetch.fetch(["mnist"], root=root, mirror="http://127.0.0.1:9", catalog=CATALOG, log=again)
    assert "mnist: already in" in again.getvalue()  # no network needed for what is there


def test_real_data_presets_train_on_the_fetched_digits(fetched, monkeypatch, tmp_path):
    """The issue's "done when": after the fetch, the MNIST and USPS classifier presets (DTN's
    stage 1 for either direction) train a few steps on the fetched files and score their
    fetched test splits (the second reuses the first's compiled step: same shapes)."""
    root, _, _ = fetched
    monkeypatch.setenv(cache.ENV, root)
    tiny = {"nf": 8, "feature_dim": 16, "batch_size": 4, "data.num_workers": 1, "max_steps": 2,
            "log_every": 1, "sample_every": 2, "checkpoint_every": 2}
    stage1 = set_keys(classifier_config.get_config("mnist"), tiny)
    assert stage1.data.idx_A == os.path.join(root, "mnist", "train-images-idx3-ubyte.gz")
    train.train_and_evaluate(stage1, str(tmp_path / "f"))
    result = json.load(open(tmp_path / "f" / "accuracy.json"))
    assert result["images"] == MNIST["t10k"]  # scored on the fetched test split and its labels
    usps = set_keys(classifier_config.get_config("usps"), tiny)
    assert usps.data.idx_A == os.path.join(root, "usps", "train-images-idx3-ubyte.gz")
    state = train.train_and_evaluate(usps, str(tmp_path / "f_usps"))
    assert int(state.step) == 2
    assert json.load(open(tmp_path / "f_usps" / "accuracy.json"))["images"] == USPS["t10k"]


def test_a_partial_download_is_resumed_with_a_range_request(server, tmp_path):
    name = "train-images-idx3-ubyte.gz"
    data = FILES[name]
    os.makedirs(tmp_path / fetch.DOWNLOADS)
    (tmp_path / fetch.DOWNLOADS / f"{name}.part").write_bytes(data[:100])
    server.requests.clear()
    fetch.fetch(["mnist"], root=str(tmp_path), mirror=_url(server), catalog=CATALOG, log=io.StringIO())
    assert (name, "bytes=100-") in server.requests
    assert (tmp_path / "mnist" / name).read_bytes() == data


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "launch.fetch", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=60, env={**os.environ, **(env or {})})


def test_a_checksum_that_differs_is_one_error_line_and_the_file_is_set_aside(server, tmp_path):
    # The real catalog's published SHA-256 cannot match this test's tiny MNIST files.
    result = _cli("mnist", f"--mirror={_url(server)}", f"--data_root={tmp_path}")
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "train-images-idx3-ubyte.gz: sha256" in errors[0] and "differs from the published" in errors[0]
    assert "kept aside as" in errors[0]
    downloads = tmp_path / fetch.DOWNLOADS
    assert os.listdir(downloads) == ["train-images-idx3-ubyte.gz.bad"]
    assert (downloads / "train-images-idx3-ubyte.gz.bad").read_bytes() == FILES["train-images-idx3-ubyte.gz"]
    assert not (tmp_path / "mnist").exists()


def test_an_unreachable_server_is_one_error_line(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = _cli("usps", f"--mirror=http://127.0.0.1:{port}", f"--data_root={tmp_path}")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [result.stderr.strip()], result.stderr
    assert result.stderr.startswith(f"error: cannot reach http://127.0.0.1:{port}/usps.bz2")
    assert "--from=" in result.stderr
    listed = _cli("--list", env={cache.ENV: str(tmp_path)})
    assert listed.returncode == 0 and f"data root: {tmp_path}" in listed.stdout
    assert all(name in listed.stdout for name in ("mnist", "usps", "horse2zebra", "style_monet.pth"))


def test_from_a_folder_offline_checks_the_files_and_leaves_them_alone(tmp_path):
    offline = tmp_path / "usb"
    offline.mkdir()
    for name in ("usps.bz2", "usps.t.bz2", "horse2zebra.zip", "horse2zebra.pth"):
        (offline / name).write_bytes(FILES[name])
    root = tmp_path / "root"
    log = io.StringIO()
    done = fetch.fetch(["usps", "horse2zebra", "horse2zebra.pth"], root=str(root), source=str(offline),
                       catalog=CATALOG, log=log)
    images, labels = EXPECTED["usps", "t10k"]
    assert np.array_equal(read_idx(root / "usps" / "t10k-images-idx3-ubyte.gz"), images)
    assert np.array_equal(read_idx(root / "usps" / "t10k-labels-idx1-ubyte.gz"), labels)
    # The zip's top folder is dropped: <root>/cyclegan/horse2zebra/trainA/..., as the folder loader reads.
    assert done["horse2zebra"] == cache.cyclegan_folder("horse2zebra", str(root))
    assert sorted(os.listdir(done["horse2zebra"])) == ["testA", "testB", "trainA", "trainB"]
    assert len(list_images(os.path.join(done["horse2zebra"], "trainB"))) == 2
    assert open(done["horse2zebra.pth"], "rb").read() == FILES["horse2zebra.pth"]
    assert done["horse2zebra.pth"] == cache.weights_file("horse2zebra", str(root))
    assert f"warning: no published checksum for horse2zebra.pth; its sha256 is {_sha256(FILES['horse2zebra.pth'])}" \
        in log.getvalue()
    assert sorted(os.listdir(offline)) == ["horse2zebra.pth", "horse2zebra.zip", "usps.bz2", "usps.t.bz2"]
    # A file in --from that fails its check is an error and stays as it is (it is the user's).
    (offline / "train-images-idx3-ubyte.gz").write_bytes(b"corrupt")
    with pytest.raises(fetch.FetchError, match=r"usb/train-images-idx3-ubyte\.gz: sha256 .* differs"):
        fetch.fetch(["mnist"], root=str(root), source=str(offline), catalog=CATALOG, log=io.StringIO())
    assert (offline / "train-images-idx3-ubyte.gz").read_bytes() == b"corrupt"
    with pytest.raises(fetch.FetchError, match=r"--from=.*usb has no train-labels-idx1-ubyte\.gz"):
        (offline / "train-images-idx3-ubyte.gz").write_bytes(FILES["train-images-idx3-ubyte.gz"])
        fetch.fetch(["mnist"], root=str(root), source=str(offline), catalog=CATALOG, log=io.StringIO())
    with pytest.raises(fetch.FetchError, match=r"unknown name\(s\) zebra"):
        fetch.fetch(["zebra"], root=str(root), catalog=CATALOG)


def test_a_zip_with_unsafe_member_names_is_not_unpacked(tmp_path):
    evil = tmp_path / "horse2zebra.zip"
    evil.write_bytes(_zip({"../escape.png": _png(1)}))
    entry = dataclasses.replace(CATALOG["horse2zebra"], files=(dataclasses.replace(
        CATALOG["horse2zebra"].files[0], sha256=_sha256(evil.read_bytes())),))
    with pytest.raises(fetch.FetchError, match="unsafe member name '../escape.png'"):
        fetch.fetch(["horse2zebra"], root=str(tmp_path / "root"), source=str(evil),
                    catalog={"horse2zebra": entry}, log=io.StringIO())
    assert not (tmp_path / "escape.png").exists() and not (tmp_path / "root" / "cyclegan" / "horse2zebra").exists()


def test_presets_without_their_data_fail_in_one_line_giving_the_fetch_command(monkeypatch, tmp_path):
    monkeypatch.setenv(cache.ENV, str(tmp_path))
    where = f"in {tmp_path} "
    for config, names in ((cyclegan_config.get_config("mnist2usps"), "mnist usps"),
                          (unit_config.get_config("usps2mnist"), "usps mnist"),
                          (ufdn_config.get_config("uda"), "mnist usps"),
                          (dtn_config.get_config("mnist2usps_pretrain"), "mnist"),
                          (classifier_config.get_config("usps"), "usps")):
        with pytest.raises(config_validation.ConfigError) as err:
            config_validation.validate(config)
        message = str(err.value)
        assert "\n" not in message and where in message, message
        assert f"run python -m launch.fetch {names} (or set UNPAIRED_DATA" in message, message
    with pytest.raises(DataError, match=r"no horse2zebra data in .*\(config\.data\.dataroot\): run python "
                                        r"-m launch\.fetch horse2zebra"):
        make_loader(cyclegan_config.get_config("horse2zebra").data, split="train", batch_size=1, seed=0,
                    input_nc=3, output_nc=3)
    # A path of the user's own that does not exist keeps its own message (no fetch command).
    config = cyclegan_config.get_config("mnist2usps")
    config.data.idx_A = config.data.idx_B = str(tmp_path / "mine" / "train-images-idx3-ubyte.gz")
    config_validation.validate(config)  # unlabelled domains: the loader checks the files
    with pytest.raises(DataError, match=r"config\.data\.idx_A=.*mine.* does not exist$"):
        make_loader(config.data, split="train", batch_size=1, seed=0, input_nc=1, output_nc=1)


def test_the_data_root_is_the_env_var_else_the_user_cache(monkeypatch, tmp_path):
    monkeypatch.setenv(cache.ENV, str(tmp_path / "d"))
    assert cache.data_root() == str(tmp_path / "d")
    monkeypatch.delenv(cache.ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.data_root() == str(tmp_path / "xdg" / "unpaired")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache.data_root() == str(tmp_path / "home" / ".cache" / "unpaired")
    from unpaired.benchmarks import digits
    assert digits.Settings().data_root == cache.data_root()
