"""Translate image files with any method's generator: ours (a workdir) or an official weight file.

What the reference's `test.py --model test` does, without its limits: any image size
(reflect-padded or resized to what the network accepts, and the output brought back to
the input's size), any image mode (decoded to the model's channels), a single file or a
folder tree, batches of equally sized images, and an `index.html` that still works when
the output folder is moved. Facts about the reference: `shared/reference/cyclegan.md` §4-§5.

The pieces are small and mostly pure so that each can be tested and reused:

* loading: :func:`load_generator` (dispatch), :func:`load_workdir_state`,
  :func:`method_generator` -> a :class:`Generator` (a jitted NHWC [-1, 1] function). What
  a generator is, which one serves a request (direction, target domain, domain code),
  its channels, size multiple and official weight format are the method's business
  (the protocol is in `unpaired/methods/__init__.py`); nothing here knows a method;
* pixels: :func:`prepare_input` (fit to the net), :func:`tensor2im`, :func:`finish_output`;
* files: :func:`list_inputs`, :func:`output_names`, :func:`index_html`;
* driving: :func:`translate_arrays` (batching) and :func:`translate_path` (all of it).
"""

from __future__ import annotations

import dataclasses
import html
import logging
import math
import os
import posixpath
import urllib.parse
from pathlib import Path
from typing import Any, Callable, Hashable, Iterable, Iterator, Mapping, Sequence, TypeVar

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image

from unpaired import torch_io
from unpaired.checkpoint import (
    CHECKPOINT_SUBDIR, CheckpointError, CheckpointMismatchError, Checkpointer, checkpoint_dir,
)
from unpaired.data.decode import load_image
from unpaired.data.errors import DataError
from unpaired.data.folders import IMAGE_EXTENSIONS, list_images
from unpaired.data.transforms import to_unit_range
from unpaired.methods.translation import (  # noqa: F401 (re-exported for the CLI)
    DIRECTIONS, TranslationRequest, make_request,
)

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)

RESIZE_MODES = ("pad", "resize")
INDEX_FILE = "index.html"
INPUTS_DIR = "inputs"


class TranslateError(ValueError):
    """A user-facing problem with the translate arguments; the message names the path or option."""


# --------------------------------------------------------------------------------------
# Generators
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Generator:
    """One translation direction, ready to run.

    `apply` maps a float32 NHWC batch in [-1, 1] with `in_channels` channels and sides
    that are multiples of `size_multiple` to a batch of the same size with
    `out_channels` channels. It is jitted once, so it compiles once per distinct input
    shape. `source` says in words what was loaded (for logs and the HTML page).
    `input_size`, when set, is the one square side the networks take (DTN, UFDN, UNIT DA):
    every image is resized to it, whatever the resize mode.
    """

    apply: Callable[[np.ndarray], jax.Array]
    in_channels: int
    out_channels: int
    size_multiple: int
    source: str
    input_size: int | None = None


def resolve_workdir(path: str | os.PathLike[str], step: int | None = None
                    ) -> tuple[Path, int | None]:
    """(workdir, step) for a workdir, its `checkpoints/` folder or a `checkpoints/<step>` folder."""
    p = Path(path)
    if p.name.isdigit() and p.parent.name == CHECKPOINT_SUBDIR:
        if step is not None and int(step) != int(p.name):
            raise TranslateError(f"checkpoint {os.fspath(path)!r} is step {int(p.name)} "
                                 f"but step={step} was asked for")
        p, step = p.parent.parent, int(p.name)
    elif p.name == CHECKPOINT_SUBDIR and not checkpoint_dir(p).is_dir():
        p = p.parent
    if not checkpoint_dir(p).is_dir():
        raise TranslateError(
            f"checkpoint {os.fspath(path)!r} is not a workdir: it has no {CHECKPOINT_SUBDIR}/ "
            "folder (expected a training workdir, its checkpoints/<step> folder, or a PyTorch "
            ".pth file)"
        )
    return p, step


def _key_template(state: Any) -> Any:
    """`state` with a raw uint32 PRNG key instead of a typed one (for runs saved that way)."""
    return state.replace(key=jax.eval_shape(lambda: jax.random.PRNGKey(0)))


def load_workdir_state(
    workdir: str | os.PathLike[str], step: int | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> tuple[Any, Any, ml_collections.ConfigDict]:
    """(method, state, config) of checkpoint `step` (default: the newest) of a training run.

    The config is the one saved in the checkpoint's meta, so the networks are rebuilt
    exactly as trained; `overrides` (flat 'a.b' -> value, e.g. {'dtype': 'bfloat16'}) are
    applied on top. Everything but params and model_state is dropped from the state
    (optimizer moments, pools), since inference needs neither.
    """
    workdir = Path(workdir)
    directory = checkpoint_dir(workdir)
    if not directory.is_dir():
        raise TranslateError(f"{os.fspath(workdir)!r} has no {CHECKPOINT_SUBDIR}/ folder")
    ckpt = Checkpointer(directory, async_save=False)
    try:
        steps = ckpt.all_steps()
        if not steps:
            raise CheckpointError(f"no complete checkpoint in {directory}")
        # Resolved once (a trainer may add more); without --step the newest usable one,
        # skipping (never moving: readers leave a workdir alone) unreadable or corrupt ones.
        candidates = list(reversed(steps)) if step is None else [int(step)]
        unusable = []
        for step in candidates:
            try:
                method, state, config = _load_step(ckpt, step, overrides)
                break
            except CheckpointMismatchError:
                raise
            except CheckpointError as e:
                if len(candidates) == 1:
                    raise
                unusable.append(f"step {step}")
                log.warning("%s; trying an older checkpoint", e)
        else:
            raise CheckpointError(
                f"no usable checkpoint in {directory}: {', '.join(unusable)} (see the lines above)")
        if unusable:
            log.warning("using checkpoint step %d in %s: %s unusable", step, directory, ", ".join(unusable))
    finally:
        ckpt.close()
    state = state.replace(opt_state={}, buffers={})
    return method, state, config


def _load_step(ckpt: Checkpointer, step: int, overrides: Mapping[str, Any] | None
               ) -> tuple[Any, Any, ml_collections.ConfigDict]:
    """(method, state, config) of checkpoint `step`, its networks rebuilt from the saved config."""
    from unpaired import methods

    meta = ckpt.read_meta(step)
    if not isinstance(meta.get("config"), Mapping):
        raise CheckpointError(f"checkpoint step {step} in {ckpt.directory} has no saved config in its meta")
    config = ml_collections.ConfigDict(meta["config"])
    for name, value in (overrides or {}).items():
        _set_path(config, name, value)
    method = methods.build(config)
    template = jax.eval_shape(method.create_state, jax.random.key(0))
    try:
        state, _ = ckpt.restore(template, step)
    except CheckpointMismatchError as e:
        if not all(m.startswith("key:") for m in e.mismatches):
            raise
        state, _ = ckpt.restore(_key_template(template), step)
    return method, state, config


def _set_path(config: ml_collections.ConfigDict, name: str, value: Any) -> None:
    *parents, leaf = name.split(".")
    node = config
    for part in parents:
        node = node[part]
    node[leaf] = value


def method_generator(method: Any, params: Any, model_state: Any, request: TranslationRequest,
                     source: str, *, eval_mode: bool = True) -> Generator:
    """The generator that serves `request`, asked of the method (channels, size multiple, apply).

    `eval_mode=False` runs the networks in train mode, as the reference's test.py does
    without `--eval`: BatchNorm normalises each batch with its own statistics (so the
    output of an image depends on the others in its batch, and on --batch_size) and
    dropout is active with masks from a fixed key. Models without either are unaffected.
    """
    try:
        request = method.resolve_request(request)
    except ValueError as e:
        raise TranslateError(str(e)) from None
    in_nc, out_nc = method.translation_channels(request)
    train = not eval_mode
    fn = jax.jit(lambda p, s, x: method.translate(
        p, x, request, s, train=train, key=jax.random.key(0) if train else None))
    return Generator(
        apply=lambda x: fn(params, model_state, x), in_channels=int(in_nc),
        out_channels=int(out_nc), size_multiple=int(method.size_multiple), source=source,
        input_size=getattr(method, "input_size", None),
    )


def load_generator(
    checkpoint: str | os.PathLike[str], *, config: ml_collections.ConfigDict | None = None,
    direction: str | None = None, step: int | None = None,
    overrides: Mapping[str, Any] | None = None, request: TranslationRequest | None = None,
    eval_mode: bool = True,
) -> Generator:
    """A generator from a workdir (or its checkpoints/<step>) or from an official weight file.

    A directory is read as one of our training runs: the method and architecture come
    from its saved config (plus `overrides`), `request` (or just `direction`) picks the
    generator and `step` the checkpoint (default: the newest). A file is read by the
    method of `config` (which also gives the architecture) in its official weight
    format, with `method.load_official`; `step` does not apply.
    """
    from unpaired import methods

    path = os.fspath(checkpoint)
    try:
        request = request or TranslationRequest(direction=direction)
    except ValueError as e:
        raise TranslateError(str(e)) from None
    weight_file = os.path.isfile(path) or os.path.isfile(path + ".index")  # or a TF prefix
    if not os.path.exists(path) and not weight_file:
        raise TranslateError(f"checkpoint {path!r} does not exist")
    if weight_file:
        if config is None:
            raise TranslateError(f"{path!r} is a weight file without an architecture: pass the "
                                 "config of the model it holds")
        method = methods.build(config)
        try:
            params, model_state, served = method.load_official(path, request)
        except torch_io.StateDictMismatchError:
            raise
        except ValueError as e:  # a request the method cannot serve, an unreadable file
            raise TranslateError(str(e)) from None
        if served != method.resolve_request(request):
            log.warning("%s holds one generator, which serves %s; the request %s is ignored",
                        path, served, request)
        params, model_state = jax.device_put((params, model_state))
        source = f"{path} ({config.method} {method.describe(served)})"
        return method_generator(method, params, model_state, served, source, eval_mode=eval_mode)
    workdir, step = resolve_workdir(path, step)
    method, state, cfg = load_workdir_state(workdir, step, overrides)
    try:
        what = method.describe(request)
    except ValueError as e:
        raise TranslateError(str(e)) from None
    source = f"{workdir} step {int(state.step)} ({cfg.method} {what})"
    return method_generator(method, state.params, state.model_state, request, source,
                            eval_mode=eval_mode)


# --------------------------------------------------------------------------------------
# Pixels
# --------------------------------------------------------------------------------------


def valid_size(n: int, multiple: int, mode: str) -> int:
    """The side the net gets for a side of `n` pixels.

    The next multiple of `multiple` for 'pad', the nearest for 'resize'; at least `multiple`.
    """
    if mode == "pad":
        return max(multiple, math.ceil(n / multiple) * multiple)
    if mode == "resize":  # rounded as the reference's --preprocess none (Python round)
        return max(multiple, int(round(n / multiple)) * multiple)
    raise TranslateError(f"unknown resize mode {mode!r}; expected one of {RESIZE_MODES}")


def _pads(n: int, target: int) -> tuple[int, int]:
    """Split the padding of a side evenly (the extra pixel after), so borders are treated alike."""
    before = (target - n) // 2
    return before, target - n - before


def prepare_input(img: Image.Image, multiple: int, mode: str,
                  input_size: int | None = None) -> np.ndarray:
    """An 8-bit 'L'/'RGB' image -> float32 HxWxC in [-1, 1] with sides the net accepts.

    'pad' reflect-pads (evenly on both sides; numpy reflects repeatedly where the pad is
    wider than the image); 'resize' resizes with PIL bicubic, as the reference's
    preprocessing does; networks with one `input_size` get that square, resized.
    Values are ToTensor + Normalize(0.5, 0.5), as in training.
    """
    w, h = img.size
    th, tw = valid_size(h, multiple, mode), valid_size(w, multiple, mode)
    if input_size:
        mode, th, tw = "resize", int(input_size), int(input_size)
    if mode == "resize":
        if (tw, th) != (w, h):
            img = img.resize((tw, th), Image.Resampling.BICUBIC)
        return to_unit_range(np.asarray(img))
    x = to_unit_range(np.asarray(img))
    if (th, tw) == (h, w):
        return x
    return np.pad(x, (_pads(h, th), _pads(w, tw), (0, 0)), mode="reflect")


def tensor2im(y: np.ndarray) -> np.ndarray:
    """[-1, 1] floats -> uint8 as the reference's `tensor2im`: ((y + 1) / 2 * 255) truncated.

    Computed in float32 like the reference's numpy code. Values outside [-1, 1] (never
    from a tanh output) are clipped and NaN becomes 0 rather than wrapping around.
    """
    v = (np.asarray(y, np.float32) + 1) / 2.0 * 255.0
    return np.clip(np.nan_to_num(v), 0, 255).astype(np.uint8)


def finish_output(y: np.ndarray, size: tuple[int, int], mode: str) -> np.ndarray:
    """The net's HxWxC output for an input of `size` (width, height) -> uint8 of that size.

    'pad' crops away exactly what :func:`prepare_input` added; 'resize' resizes the 8-bit
    image back with PIL bicubic.
    """
    w, h = size
    out = tensor2im(y)
    if mode == "pad":
        top, left = _pads(h, out.shape[0])[0], _pads(w, out.shape[1])[0]
        return out[top:top + h, left:left + w]
    if out.shape[:2] == (h, w):
        return out
    return np.asarray(to_pil(out).resize((w, h), Image.Resampling.BICUBIC)).reshape(h, w, -1)


def to_pil(image: np.ndarray) -> Image.Image:
    """uint8 HxWxC -> PIL image: 1 channel is saved as grayscale ('L'), 3 as 'RGB'."""
    image = np.ascontiguousarray(image, np.uint8)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    return Image.fromarray(image)  # uint8 HxW is 'L', HxWx3 is 'RGB'


# --------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------


def _inside(path: str, folder: str) -> bool:
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def list_inputs(input_path: str | os.PathLike[str], exclude: str | os.PathLike[str] | None = None
                ) -> list[tuple[str, str]]:
    """(path, relative posix name) of every image to translate, sorted.

    A file is taken as is (any extension; decoding decides). A folder is walked
    recursively for image files; anything under `exclude` (the output folder, when it
    lies inside the input folder) is skipped so that re-runs do not translate outputs.
    """
    path = os.fspath(input_path)
    if not os.path.exists(path):
        raise DataError(f"input {path!r} does not exist")
    if os.path.isfile(path):
        return [(path, os.path.basename(path))]
    try:
        paths = list_images(path)
    except DataError as e:
        raise DataError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}, any case) "
                        f"under input folder {path!r}") from e
    if exclude is not None and os.path.isdir(exclude):
        paths = [p for p in paths if not _inside(p, os.fspath(exclude))]
        if not paths:
            raise DataError(f"input folder {path!r} has no images outside the output folder "
                            f"{os.fspath(exclude)!r}")
    return [(p, Path(os.path.relpath(p, path)).as_posix()) for p in paths]


def output_names(relative: Sequence[str]) -> list[str]:
    """Unique PNG names (posix, relative) for input names: `sub/a.jpg` -> `sub/a.png`.

    Inputs whose names differ only in the extension (`a.jpg`, `a.png`; compared
    case-insensitively, as on macOS/Windows file systems) keep it in the name:
    `a_jpg.png`, `a_png.png`. Any name still taken gets `_2`, `_3`, ... appended.
    """
    stems = [posixpath.splitext(r) for r in relative]
    count: dict[str, int] = {}
    for stem, _ in stems:
        count[stem.lower()] = count.get(stem.lower(), 0) + 1
    names, taken = [], set()
    for stem, ext in stems:
        base = f"{stem}_{ext.lstrip('.').lower()}" if count[stem.lower()] > 1 and ext else stem
        name, i = base, 1
        while f"{name}.png".lower() in taken:
            i += 1
            name = f"{base}_{i}"
        taken.add(f"{name}.png".lower())
        names.append(f"{name}.png")
    return names


def inputs_dir_name(names: Iterable[str]) -> str:
    """'inputs', or 'inputs_', 'inputs__', ... if the outputs already use that top-level folder."""
    tops = {n.split("/", 1)[0].lower() for n in names if "/" in n}
    name = INPUTS_DIR
    while name.lower() in tops:
        name += "_"
    return name


@dataclasses.dataclass(frozen=True)
class Translated:
    """One translated file: its source path and the posix names written under the output folder."""

    source: str
    name: str  # the input's name relative to the input folder (posix)
    input_copy: str
    output: str
    size: tuple[int, int]  # (width, height)


def index_html(rows: Sequence[Translated], title: str, note: str = "") -> str:
    """A page with one table row per image: name, input, output; every link relative."""
    def img(name: str) -> str:
        url = html.escape(urllib.parse.quote(name), quote=True)
        return f'<a href="{url}"><img src="{url}" alt="{html.escape(name)}"></a>'

    lines = [
        "<!DOCTYPE html>", '<html><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px;text-align:center;vertical-align:top}"
        "img{max-width:256px;max-height:256px}</style>",
        "</head><body>", f"<h1>{html.escape(title)}</h1>",
    ]
    if note:
        lines.append(f"<p>{html.escape(note)}</p>")
    lines.append("<table><tr><th>file</th><th>input</th><th>output</th></tr>")
    for r in rows:
        lines.append(f"<tr><td>{html.escape(r.name)}<br>{r.size[0]}&times;{r.size[1]}</td>"
                     f"<td>{img(r.input_copy)}</td><td>{img(r.output)}</td></tr>")
    lines += ["</table>", "</body></html>", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# Driving
# --------------------------------------------------------------------------------------


def translate_arrays(apply: Callable[[np.ndarray], Any], items: Iterable[tuple[K, np.ndarray]],
                     batch_size: int = 1) -> Iterator[tuple[K, np.ndarray]]:
    """Runs `apply` on HxWxC arrays in batches of equal shape; yields (key, output) as done.

    Arrays are queued per shape and a queue is run when it holds `batch_size` of them;
    what is left at the end is run with the batch filled up by repeating its last
    image, so every call has the same batch size and `apply` compiles once per shape.
    (Each image is translated independently: the generators run in eval mode.) One
    batch stays in flight while the next is loaded and the previous one's outputs are
    consumed, so decoding and encoding overlap the device work. Outputs come in
    completion order, not input order; at most `batch_size` images per distinct shape
    are held at a time.
    """
    if batch_size < 1:
        raise TranslateError(f"batch_size must be >= 1, got {batch_size}")
    queues: dict[tuple[int, ...], list[tuple[K, np.ndarray]]] = {}
    in_flight: list[tuple[list[K], Any]] = []

    def dispatch(queue: list[tuple[K, np.ndarray]]) -> Iterator[tuple[K, np.ndarray]]:
        arrays = [a for _, a in queue]
        arrays += [arrays[-1]] * (batch_size - len(arrays))
        in_flight.append(([k for k, _ in queue], apply(np.stack(arrays))))  # asynchronous
        queue.clear()
        while len(in_flight) > 1:
            yield from collect()

    def collect() -> Iterator[tuple[K, np.ndarray]]:
        keys, result = in_flight.pop(0)
        out = np.asarray(result)  # waits for this batch only
        yield from zip(keys, out)

    for key, array in items:
        queue = queues.setdefault(array.shape, [])
        queue.append((key, array))
        if len(queue) == batch_size:
            yield from dispatch(queue)
    for queue in queues.values():
        if queue:
            yield from dispatch(queue)
    while in_flight:
        yield from collect()


def translate_path(
    generator: Generator, input_path: str | os.PathLike[str], output_dir: str | os.PathLike[str],
    *, resize: str = "pad", batch_size: int = 1, title: str | None = None,
) -> list[Translated]:
    """Translates an image file or a folder tree into `output_dir`; returns the rows written.

    Writes `<name>.png` per input (relative subfolders kept, names from
    :func:`output_names`), a PNG copy of each decoded input under `inputs/`, and
    `index.html` showing them side by side. Inputs are decoded to the generator's input
    channels (grayscale, RGBA, palette, 16-bit all work) and fitted to its size multiple
    with `resize` ('pad' or 'resize'); outputs have the input's size.
    """
    if resize not in RESIZE_MODES:
        raise TranslateError(f"unknown resize mode {resize!r}; expected one of {RESIZE_MODES}")
    if generator.input_size and resize != "resize":
        log.info("the networks take %dx%d images only: each image is resized to that and its "
                 "output back to the image's size (--resize=%s fits generators that take any "
                 "multiple of their size)", generator.input_size, generator.input_size, resize)
        resize = "resize"
    out_dir = Path(output_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise TranslateError(f"output {os.fspath(output_dir)!r} exists and is not a folder")
    inputs = list_inputs(input_path, exclude=out_dir)
    names = output_names([rel for _, rel in inputs])
    copies = inputs_dir_name(names)
    sources = {os.path.realpath(path): path for path, _ in inputs}
    for name in names + [f"{copies}/{n}" for n in names]:
        target = os.path.realpath(out_dir / name)
        if target in sources:
            raise TranslateError(f"writing {os.fspath(out_dir / name)!r} would overwrite the input "
                                 f"{sources[target]!r}; choose another output folder")
    rows: list[Translated | None] = [None] * len(inputs)

    def load() -> Iterator[tuple[int, np.ndarray]]:
        for i, (path, _) in enumerate(inputs):
            img = load_image(path, generator.in_channels)
            copy = f"{copies}/{names[i]}"
            _save_png(img, out_dir / copy)
            rows[i] = Translated(path, inputs[i][1], copy, names[i], img.size)
            yield i, prepare_input(img, generator.size_multiple, resize, generator.input_size)

    done = 0
    for i, y in translate_arrays(generator.apply, load(), batch_size):
        row = rows[i]
        _save_png(to_pil(finish_output(y, row.size, resize)), out_dir / row.output)
        done += 1
        if done % 100 == 0:
            log.info("translated %d of %d images", done, len(inputs))
    title = title or f"{os.fspath(input_path)} translated"
    page = index_html(rows, title, f"generator: {generator.source}; sizes fitted by {resize}")
    (out_dir / INDEX_FILE).write_text(page, encoding="utf-8")
    return rows


def _save_png(img: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="PNG")
