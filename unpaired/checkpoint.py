"""Checkpoints of the whole training state, safe to resume from.

The reference implementations save only network weights, so a resumed run
restarts its optimizer moments, learning-rate schedule, RNG stream and image
pools from scratch, and the user has to find and load the right file by hand.
Here one checkpoint holds everything needed to continue bit-for-bit:

* ``state``: the whole ``TrainState`` pytree (step, params, optimizer state,
  pools, PRNG key -- typed or raw uint32 --, model state), via orbax
  ``StandardSave``;
* ``meta``: a small JSON dict from the trainer (resolved config, data iterator
  position, method name, library version);
* ``layout``: the path, shape and dtype of every leaf of ``state``, so that a
  restore into a template built from another config fails with a message
  naming the mismatched leaves instead of orbax's partial, path-less errors
  (or, for dtypes, a silent cast);
* ``checksums``: a CRC-32 of every array leaf's bytes, taken from the host
  copy when saving and compared with the restored arrays (see Integrity).

Checkpoints live in ``<workdir>/checkpoints/<step>/``. Safety properties, and
what provides them:

* Atomic: orbax writes ``<step>.orbax-checkpoint-tmp/`` and renames it to
  ``<step>/`` only after every file is written (``AtomicRenameTemporaryPath``,
  the default for local paths). :meth:`Checkpointer.all_steps` only accepts
  directories whose name is exactly a step number, so a save killed at any
  point is never picked up; what it leaves behind is removed by the next
  writer's first save (never by a reader, which may run beside a writer).
* Retention deletes by renaming the old step into ``.trash/`` first
  (orbax ``todelete_subdir``), so a kill during the deletion cannot leave a
  half-deleted ``<step>/`` that looks complete; ``.trash/`` is emptied later.
* A failed save (disk full, I/O error) raises :class:`CheckpointError` naming
  the directory, removes its partial files and leaves the earlier checkpoints
  untouched; the :class:`Checkpointer` stays usable.

Durability against power loss (fsync) is orbax's/tensorstore's business and
is not promised here; process death (``kill -9``, OOM killer, preemption) is.

Integrity. TensorStore checks nothing in the array data orbax writes (zarr
chunks, zstd without its frame checksum; orbax's zarr3 layout puts a CRC32C on
the shard index only, with no option for the data), so a flipped byte on disk
restores silently as a wrong weight. Hence the ``checksums`` item: zlib CRC-32
(the checksum of PyTorch's zip entries; TensorFlow uses CRC32C) per leaf,
path -> crc. :meth:`Checkpointer.restore` recomputes it on the restored arrays
and raises :class:`CheckpointCorruptError` naming the step, directory, array
and both CRCs; unreadable files (truncated, missing) raise the same error with
TensorStore's reason, shortened (no spec dumps). Checkpoints written without
checksums (before this existed, or with ``verify=False``) restore with a log
line saying they are unverified. Cost, measured on a loaded 2-core CPU: CRC-32
runs at ~500-600 MB/s on the host copies, i.e. ~0.05 s per save and per restore
for the default digits state (16 MB, 298 leaves) and ~0.2 s for a 100 MB state
(synchronous save 0.3 -> 0.55 s, restore 0.3 -> 0.4 s); on accelerators add
one device-to-host copy per save. The CRC is taken inside :meth:`save`, before
it returns (the caller may donate the buffers next), so an asynchronous save
blocks the loop for that long. ``Checkpointer(verify=False)`` /
``config.verify_checkpoints=False`` turns both off.

Falling back. :meth:`Checkpointer.restore_newest_good` tries steps newest
first; one that cannot be read or fails its check is logged in one line and
renamed to ``<step>.corrupt-<n>`` (never deleted; :meth:`all_steps` ignores it,
and ``n`` is new each time, so nothing is ever overwritten). Readers pass
``move_aside=False``. With many hosts only process 0 renames; every host reads
the same files and so skips the same steps, and a host that finds a step gone
mid-read skips it as well.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import sys
import time
import zlib
from pathlib import Path
from typing import Any, Mapping, NoReturn, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

__all__ = [
    "CHECKPOINT_SUBDIR",
    "CheckpointCorruptError",
    "CheckpointError",
    "CheckpointMismatchError",
    "Checkpointer",
    "checkpoint_dir",
    "leaf_checksums",
    "state_layout",
    "state_matches",
]

log = logging.getLogger(__name__)

State = TypeVar("State")
Layout = list[tuple[str, tuple[int, ...], str]]

CHECKPOINT_SUBDIR = "checkpoints"
_TRASH_SUBDIR = ".trash"
_TMP_MARKER = ".orbax-checkpoint-tmp"  # orbax's suffix for unfinished saves
_STEP_RE = re.compile(r"^(0|[1-9]\d*)$")  # orbax's default step-name format
_ITEMS = ("state", "meta", "layout", "checksums")
_LAYOUT_FORMAT = 1
_CHECKSUM_FORMAT = 1
_CORRUPT_MARKER = ".corrupt-"  # <step>.corrupt-<n>: a checkpoint moved aside, kept for inspection
_MAX_LISTED = 10


class CheckpointError(RuntimeError):
    """A checkpoint could not be saved or restored; the message says where and why."""


class CheckpointMismatchError(CheckpointError):
    """The checkpoint's tree differs from the template it is restored into.

    Raised instead of reinitializing or casting, e.g. when resuming a workdir
    with a changed config. ``mismatches`` lists one line per differing leaf.
    """

    def __init__(self, message: str, mismatches: list[str]):
        super().__init__(message)
        self.mismatches = mismatches


class CheckpointCorruptError(CheckpointError):
    """A checkpoint's files cannot be read or its arrays differ from their saved checksums.

    ``step`` and ``directory`` say which checkpoint, ``array`` which leaf
    (e.g. ``params/G_A/model_1/kernel``) when known.
    """

    def __init__(self, message: str, step: int | None, directory: Path, array: str | None = None):
        super().__init__(message)
        self.step, self.directory, self.array = step, directory, array


def checkpoint_dir(workdir: str | os.PathLike) -> Path:
    """Where a run's checkpoints live: ``<workdir>/checkpoints``."""
    return Path(workdir) / CHECKPOINT_SUBDIR


def _key_name(entry: Any) -> str:
    for attr in ("key", "name", "idx"):  # DictKey, GetAttrKey, SequenceKey/FlattenedIndexKey
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def _leaf_path(path: tuple[Any, ...]) -> str:
    return "/".join(_key_name(e) for e in path)


def _leaf_dtype(leaf: Any) -> np.dtype:
    dtype = getattr(leaf, "dtype", None)
    return np.asarray(leaf).dtype if dtype is None else dtype


def state_layout(tree: Any) -> Layout:
    """``(path, shape, dtype)`` of every leaf, e.g. ``("params/G_A/kernel", (7, 7, 3, 64), "float32")``.

    Works on concrete arrays and on ``jax.eval_shape`` templates alike; a typed
    PRNG key reports its key dtype (``key<fry>``), so typed vs raw keys differ.
    """
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return [
        (_leaf_path(path), tuple(int(d) for d in np.shape(leaf)), str(_leaf_dtype(leaf)))
        for path, leaf in leaves
    ]


def _fmt_shape(shape: tuple[int, ...]) -> str:
    return str(tuple(shape)).replace(" ", "")


def _layout_mismatches(saved: Layout, model: Layout) -> list[str]:
    """One line per differing leaf, in the model's leaf order, then extra saved leaves."""
    saved_by_path = {p: (s, d) for p, s, d in saved}
    model_paths = {p for p, _, _ in model}
    out = []
    for path, shape, dtype in model:
        if path not in saved_by_path:
            out.append(f"{path}: missing from checkpoint (model has {_fmt_shape(shape)} {dtype})")
            continue
        s_shape, s_dtype = saved_by_path[path]
        if s_shape != shape and s_dtype != dtype:
            out.append(
                f"{path}: checkpoint {_fmt_shape(s_shape)} {s_dtype} vs model {_fmt_shape(shape)} {dtype}"
            )
        elif s_shape != shape:
            out.append(f"{path}: checkpoint {_fmt_shape(s_shape)} vs model {_fmt_shape(shape)}")
        elif s_dtype != dtype:
            out.append(f"{path}: checkpoint dtype {s_dtype} vs model dtype {dtype}")
    for path, shape, dtype in saved:
        if path not in model_paths:
            out.append(f"{path}: in checkpoint ({_fmt_shape(shape)} {dtype}) but not in model")
    return out


def _host_bits(leaf: Any) -> tuple[tuple[int, ...], str, bytes]:
    if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        dtype, leaf = str(leaf.dtype), jax.random.key_data(leaf)
    else:
        dtype = str(_leaf_dtype(leaf))
    arr = np.asarray(leaf)
    return arr.shape, dtype, arr.tobytes()


def state_matches(a: Any, b: Any) -> bool:
    """True iff ``a`` and ``b`` have the same tree structure and bitwise-equal leaves.

    Bitwise (NaN equals NaN with the same payload, -0.0 differs from 0.0), which
    is what "resumed exactly" means. Typed PRNG keys compare impl and key data.
    """
    leaves_a, tree_a = jax.tree_util.tree_flatten(a)
    leaves_b, tree_b = jax.tree_util.tree_flatten(b)
    if tree_a != tree_b:
        return False
    return all(_host_bits(x) == _host_bits(y) for x, y in zip(leaves_a, leaves_b))


def _crc32(arr: np.ndarray) -> int:
    return zlib.crc32(memoryview(np.ascontiguousarray(arr)).cast("B"))


def leaf_checksums(tree: Any) -> dict[str, int]:
    """CRC-32 of every non-empty array leaf's bytes (typed PRNG keys: their key data), by path.

    Leaves whose data is not all on this host (sharded over hosts) are left
    out: this host cannot see their bytes.
    """
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if _is_empty(leaf):
            continue
        if isinstance(leaf, jax.Array):
            if not (leaf.is_fully_addressable or leaf.is_fully_replicated):
                continue
            if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
                leaf = jax.random.key_data(leaf)
        out[_leaf_path(path)] = _crc32(np.asarray(leaf))
    return out


_NOISE = (
    re.compile(r"\s*See full TensorStore details:.*", re.S),
    re.compile(r"\s*\[source locations=.*?\]", re.S),
    re.compile(r"\s*\[tensorstore_spec=.*?\]", re.S),
    re.compile(r"\s*tensorstore_spec=.*", re.S),
)
_MAX_REASON = 300


def _short_reason(exc: BaseException) -> str:
    """The innermost cause of ``exc`` in one short line, without TensorStore spec dumps."""
    seen: set[int] = set()
    e: BaseException | None = exc
    last = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        last = e
        e = e.__cause__ or e.__context__
    text = str(last)
    for pattern in _NOISE:
        text = pattern.sub("", text)
    text = " ".join(text.split())
    if len(text) > _MAX_REASON:
        text = text[: _MAX_REASON - 3] + "..."
    return f"{type(last).__name__}: {text}" if text else type(last).__name__


_ARRAY_IN_ERROR = (re.compile(r'reading "([^"]+?)/[\d.]+"'), re.compile(r"'path': '([^']+?)/?'\s*,?\s*\}"))


def _array_in_error(exc: BaseException) -> str | None:
    """The leaf path (``params/G_A/...``) that a TensorStore read error names, if any."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        for pattern in _ARRAY_IN_ERROR:
            for found in pattern.finditer(str(e)):
                if "/" not in found.group(1):  # orbax joins keys with '.'; file paths have '/'
                    return found.group(1).replace(".", "/")
        e = e.__cause__ or e.__context__
    return None


def _is_closed_loop_callback(unraisable: Any) -> bool:
    """Whether an unraisable error is a TensorStore callback hitting orbax's closed event loop."""
    if not (isinstance(unraisable.exc_value, RuntimeError)
            and str(unraisable.exc_value) == "Event loop is closed"):
        return False
    tb, names = unraisable.exc_traceback, []
    while tb is not None:
        names.append(tb.tb_frame.f_code.co_name)
        tb = tb.tb_next
    return "call_soon_threadsafe" in names


def _is_abandoned_read(unraisable: Any) -> bool:
    """Whether an unraisable error is an orbax array read of a failed restore, closed unfinished.

    When the restore's event loop goes away, each read coroutine still pending is closed;
    orbax's ``_read_array_index_and_device_put`` turns the TensorStore error it was
    holding into ``Exception('Encountered error while reading array index ...')`` and,
    raised from a coroutine being collected, Python prints it as 'Exception ignored in'.
    """
    obj = unraisable.object
    name = getattr(getattr(obj, "cr_code", None), "co_name", "")
    return (name == "_read_array_index_and_device_put"
            and "error while reading array index" in str(unraisable.exc_value))


def _silence_closed_loop_callbacks() -> None:
    """Drops the tracebacks of a failed orbax restore's abandoned reads, nothing else.

    Their source: orbax runs each restore in a fresh event loop (asyncio_utils.run_sync)
    and closes it as soon as one TensorStore read fails, while the other reads are still
    in flight; each of those, on completing, calls ``loop.call_soon_threadsafe`` on the
    closed loop from a TensorStore thread and the RuntimeError goes to
    ``sys.unraisablehook`` -- up to one traceback per array, during or just after the
    failed restore; or, for a read still pending when the loop goes, an 'Exception
    ignored in <coroutine ...>' (`_is_abandoned_read`). They carry no information (the
    failure itself is raised as a CheckpointError), and orbax offers no way to drain the
    reads first, so this chained
    hook (installed once per process, idempotent) swallows exactly those and passes on
    every other unraisable error.
    """
    previous = sys.unraisablehook
    if getattr(previous, "_unpaired_closed_loop_filter", False):
        return

    def hook(unraisable: Any) -> None:
        if not (_is_closed_loop_callback(unraisable) or _is_abandoned_read(unraisable)):
            previous(unraisable)

    hook._unpaired_closed_loop_filter = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook
    logging.getLogger("asyncio").addFilter(_unretrieved_tensorstore_errors)


def _unretrieved_tensorstore_errors(record: logging.LogRecord) -> bool:
    """False (drop) for asyncio's 'exception was never retrieved' of an abandoned TensorStore read.

    The same in-flight reads of a failed restore (see `_silence_closed_loop_callbacks`) may
    instead end as tasks whose TensorStore error nobody awaits; asyncio logs each with a
    traceback when it is collected. The restore's own failure is already raised; every
    other asyncio record passes.
    """
    if "exception was never retrieved" not in str(record.msg) or not record.exc_info:
        return True
    error = record.exc_info[1]
    text = str(error)
    return not (isinstance(error, ValueError) and ("tensorstore" in text.lower() or "OCDBT" in text))


def _is_empty(leaf: Any) -> bool:
    return int(np.prod(np.shape(leaf))) == 0


def _drop_empty(tree: Any) -> Any:
    """``tree`` with zero-size leaves (e.g. a size-0 image pool) replaced by None.

    Orbax refuses to save zero-size arrays; they carry no data, and the layout
    still records their shape and dtype.
    """
    return jax.tree.map(lambda x: None if _is_empty(x) else x, tree)


def _refill_empty(restored: Any, template: Any) -> Any:
    """Puts the template's zero-size leaves back where :func:`_drop_empty` left None."""
    leaves, treedef = jax.tree_util.tree_flatten(template)
    got = jax.tree_util.tree_leaves(restored, is_leaf=lambda x: x is None)

    def empty(like: Any) -> Any:
        if isinstance(like, (jax.Array, np.ndarray)):
            return like
        array = jnp.zeros(like.shape, like.dtype)
        sharding = getattr(like, "sharding", None)
        return array if sharding is None else jax.device_put(array, sharding)

    return jax.tree_util.tree_unflatten(
        treedef, [empty(t) if _is_empty(t) else r for t, r in zip(leaves, got, strict=True)]
    )


def _is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or anything in its chain) is ENOSPC.

    Python writes raise ``OSError(ENOSPC)``; tensorstore raises ``ValueError``
    with ``RESOURCE_EXHAUSTED ... No space left on device [os_error_code='28']``.
    """
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            return True
        text = str(e)
        if "No space left" in text or f"os_error_code='{errno.ENOSPC}'" in text:
            return True
        e = e.__cause__ or e.__context__
    return False


class Checkpointer:
    """Saves and restores ``(state, meta)`` under one directory, keeping the newest ``keep``.

    Typical use by a trainer::

        ckpt = Checkpointer.for_workdir(workdir, keep=3)
        if ckpt.latest_step() is not None:  # skips (and moves aside) corrupt newer steps
            state, meta, step, _ = ckpt.restore_newest_good(jax.eval_shape(create_state, config, key))
        ...
        ckpt.save(step, state, {"config": cfg_dict, "data_step": step, ...})
        ...
        ckpt.close()

    With ``async_save=True`` :meth:`save` returns once the arrays are copied
    off the device and the files are written by a background thread. The next
    :meth:`save`, :meth:`restore`, :meth:`wait` and :meth:`close` first wait for
    it and raise :class:`CheckpointError` if it failed, so saves never overlap
    and a failure is never lost.

    Opening and restoring never delete anything, so an evaluation process may
    read a directory a trainer is writing to. Only the first :meth:`save`
    removes what a killed writer left behind (temporary dirs, ``.trash``).
    """

    def __init__(self, directory: str | os.PathLike, keep: int | None = 3, async_save: bool = True,
                 verify: bool = True):
        """Opens ``directory`` (created if missing); ``keep=None`` keeps every checkpoint.

        ``verify=False`` neither writes nor checks per-array checksums (for huge states).
        """
        if keep is not None and keep < 1:
            raise ValueError(f"keep must be >= 1 or None, got {keep}")
        self._directory = Path(directory).absolute()
        self._keep = keep
        self._async = async_save
        self._verify = verify
        self._pending: int | None = None  # step of the save that may still be running
        self._writer = False  # whether this instance has saved, and so owns the leftovers
        self._mngr = self._open()

    @classmethod
    def for_workdir(cls, workdir: str | os.PathLike, **kwargs: Any) -> "Checkpointer":
        """A Checkpointer on ``<workdir>/checkpoints``."""
        return cls(checkpoint_dir(workdir), **kwargs)

    @property
    def directory(self) -> Path:
        return self._directory

    def _open(self) -> ocp.CheckpointManager:
        _silence_closed_loop_callbacks()
        options = ocp.CheckpointManagerOptions(
            preservation_policy=ocp.checkpoint_managers.LatestN(n=self._keep),
            # Retire old steps by an atomic rename into .trash/ (emptied by wait()),
            # never by an in-place rmtree that a kill could leave half done.
            todelete_subdir=_TRASH_SUBDIR,
            enable_async_checkpointing=self._async,
            create=True,
        )
        try:
            return ocp.CheckpointManager(self._directory, item_names=_ITEMS, options=options)
        except Exception as e:
            raise CheckpointError(f"cannot open checkpoint directory {self._directory}: {e}") from e

    def all_steps(self) -> list[int]:
        """Steps of complete checkpoints on disk, ascending.

        Read from the directory, not from orbax's cache (which lists a step as
        soon as its save starts). Only ``<step>/`` dirs count; they exist only
        after the final rename, so ``*.orbax-checkpoint-tmp``, ``.trash`` and
        anything else are ignored.
        """
        try:
            entries = list(os.scandir(self._directory))
        except FileNotFoundError:
            return []
        return sorted(int(e.name) for e in entries if _STEP_RE.match(e.name) and e.is_dir())

    def latest_step(self) -> int | None:
        """Newest complete checkpoint's step, or None. Does not wait for a pending save."""
        steps = self.all_steps()
        return steps[-1] if steps else None

    def save(self, step: int, state: Any, meta: Mapping[str, Any] | None = None, force: bool = False) -> bool:
        """Starts saving ``state`` and the JSON-able ``meta`` as checkpoint ``step``.

        Returns False (and saves nothing) if ``step`` already has a checkpoint,
        or, unless ``force``, if it is older than the newest one (e.g. after
        rolling back to an earlier step). Raises :class:`CheckpointError` if
        this or the previous (asynchronous) save fails; earlier checkpoints
        are kept. Once it returns, ``state``'s buffers may be donated/reused.
        """
        self.wait()
        step = int(step)
        meta = dict(meta or {})
        try:
            json.dumps(meta)
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"checkpoint meta for step {step} is not JSON-serializable: {e}") from e
        if not self._writer:
            self._remove_leftovers()
            self._writer = True
        steps = self.all_steps()
        if step in steps or (not force and steps and step < steps[-1]):
            log.warning("checkpoint step %d not saved in %s: steps there are %s", step, self._directory, steps)
            return False
        items = dict(
            state=ocp.args.StandardSave(_drop_empty(state)),
            meta=ocp.args.JsonSave(meta),
            layout=ocp.args.JsonSave(
                {"format": _LAYOUT_FORMAT, "leaves": [list(leaf) for leaf in state_layout(state)]}
            ),
        )
        if self._verify:  # before orbax's save returns: the caller may donate the buffers after
            items["checksums"] = ocp.args.JsonSave(
                {"format": _CHECKSUM_FORMAT, "algorithm": "crc32", "leaves": leaf_checksums(state)})
        args = ocp.args.Composite(**items)
        self._pending = step
        try:
            self._mngr.save(step, args=args, force=True)  # force: our checks above replace orbax's
        except Exception as e:
            self._fail(e)
        if not self._async:
            self._pending = None
        return True

    def wait(self) -> None:
        """Blocks until the pending save (if any) is complete on disk; raises if it failed."""
        try:
            self._mngr.wait_until_finished()
        except Exception as e:
            self._fail(e)
        self._pending = None
        if self._writer:
            shutil.rmtree(self._directory / _TRASH_SUBDIR, ignore_errors=True)

    def _remove_leftovers(self) -> None:
        """Deletes unfinished saves and retired steps left by a writer that died."""
        for entry in self._directory.glob(f"*{_TMP_MARKER}*"):
            shutil.rmtree(entry, ignore_errors=True)
        shutil.rmtree(self._directory / _TRASH_SUBDIR, ignore_errors=True)

    def _remove_partial(self, step: int | None) -> None:
        """Deletes the temporary directory of a failed save of ``step``.

        Retries briefly: after the first write error orbax returns while some
        of its writer threads may still be creating files in there.
        """
        for _ in range(50):
            leftovers = list(self._directory.glob(f"{step}{_TMP_MARKER}*"))
            if not leftovers:
                return
            for entry in leftovers:
                shutil.rmtree(entry, ignore_errors=True)
            time.sleep(0.02)
        log.warning("could not remove partial checkpoint %s%s in %s", step, _TMP_MARKER, self._directory)

    def _fail(self, exc: Exception) -> NoReturn:
        """Cleans up after a failed save and raises a CheckpointError that says what happened."""
        step, self._pending = self._pending, None
        # Free the space the partial save took (it matters most when the disk
        # is full) and reopen orbax, whose cached step list is wrong after a
        # failure (it already dropped the steps the failed save would retire).
        try:
            self._mngr.close()
        except Exception:  # the failure being reported already
            pass
        self._remove_partial(step)
        self._mngr = self._open()
        latest = self.latest_step()
        kept = (
            f"newest complete checkpoint is still step {latest}"
            if latest is not None
            else "no complete checkpoint exists"
        )
        why = "disk full (No space left on device)" if _is_disk_full(exc) else f"{type(exc).__name__}: {exc}"
        raise CheckpointError(f"saving checkpoint step {step} to {self._directory} failed: {why}; {kept}") from exc

    def _resolve_step(self, step: int | None) -> int:
        """``step``, or the newest complete one; raises CheckpointError if there is no such checkpoint."""
        self.wait()
        steps = self.all_steps()
        if step is None:
            if not steps:
                raise CheckpointError(f"no complete checkpoint in {self._directory}")
            return steps[-1]
        if int(step) not in steps:
            raise CheckpointError(f"no checkpoint for step {step} in {self._directory}; available: {steps}")
        return int(step)

    def _read_json(self, step: int, *names: str) -> ocp.args.Composite:
        try:
            return self._mngr.restore(step, args=ocp.args.Composite(**{n: ocp.args.JsonRestore() for n in names}))
        except Exception as e:
            raise CheckpointCorruptError(
                f"cannot read {'/'.join(names)} of checkpoint step {step} in {self._directory}: "
                f"{_short_reason(e)}", step, self._directory) from e

    def read_meta(self, step: int | None = None) -> dict[str, Any]:
        """The ``meta`` dict saved with ``step`` (default: the newest), without loading the state.

        E.g. to rebuild the run's config before building the template for :meth:`restore`.
        """
        step = self._resolve_step(step)
        return dict(self._read_json(step, "meta").meta)

    def restore(self, template_state: State, step: int | None = None) -> tuple[State, dict[str, Any]]:
        """Loads checkpoint ``step`` (default: the newest) into the structure of ``template_state``.

        ``template_state`` may be a real state (e.g. ``create_state(config, key)``)
        or its ``jax.eval_shape``; the result has its tree structure, shapes,
        dtypes and (for concrete arrays) shardings. Raises
        :class:`CheckpointMismatchError` naming the differing leaves if the
        checkpoint was written from another tree, and :class:`CheckpointError`
        if there is no such checkpoint or it cannot be read.
        """
        step = self._resolve_step(step)
        where = f"checkpoint step {step} in {self._directory}"
        side = self._read_json(step, "meta", "layout")
        saved = [(path, tuple(shape), dtype) for path, shape, dtype in side.layout["leaves"]]
        mismatches = _layout_mismatches(saved, state_layout(template_state))
        if mismatches:
            shown = "\n  ".join(mismatches[:_MAX_LISTED])
            if len(mismatches) > _MAX_LISTED:
                shown += f"\n  ... and {len(mismatches) - _MAX_LISTED} more"
            raise CheckpointMismatchError(
                f"{where} does not match the model state ({len(mismatches)} differing leaves; "
                f"was it written with another config?):\n  {shown}",
                mismatches,
            )
        try:
            restore_args = ocp.args.StandardRestore(_drop_empty(template_state))
            restored = self._mngr.restore(step, args=ocp.args.Composite(state=restore_args)).state
        except Exception as e:
            array = _array_in_error(e)
            raise CheckpointCorruptError(
                f"cannot read {where}" + (f", array {array}" if array else "") + f": {_short_reason(e)}",
                step, self._directory, array) from e
        restored = _refill_empty(restored, template_state)
        if self._verify:
            self._check(step, restored)
        return restored, dict(side.meta)

    def _check(self, step: int, restored: Any) -> None:
        """Raises CheckpointCorruptError if a restored array differs from its saved CRC-32."""
        where = f"checkpoint step {step} in {self._directory}"
        if not (self._directory / str(step) / "checksums").is_dir():
            log.warning("%s has no checksums (written before they existed or with verify off); "
                        "restored unverified", where)
            return
        saved = self._read_json(step, "checksums").checksums
        if saved.get("algorithm") != "crc32":
            raise CheckpointCorruptError(
                f"{where}: unknown checksum algorithm {saved.get('algorithm')!r}", step, self._directory)
        expected = saved["leaves"]
        for path, crc in leaf_checksums(jax.device_get(restored)).items():
            if path in expected and expected[path] != crc:
                raise CheckpointCorruptError(
                    f"{where} is corrupt: array {path} has CRC-32 {crc:#010x} on disk, "
                    f"{expected[path]:#010x} when saved", step, self._directory, path)

    def move_aside(self, step: int) -> Path | None:
        """Renames ``<step>/`` to a new ``<step>.corrupt-<n>/`` (kept, ignored by :meth:`all_steps`).

        Returns the new path; only process 0 renames (others return None).
        """
        if jax.process_index() != 0:
            return None
        taken = [e.name for e in self._directory.glob(f"{step}{_CORRUPT_MARKER}*")]
        numbers = [int(n.rsplit("-", 1)[1]) for n in taken if n.rsplit("-", 1)[1].isdigit()]
        target = self._directory / f"{step}{_CORRUPT_MARKER}{max(numbers, default=0) + 1}"
        try:
            os.rename(self._directory / str(step), target)
        except OSError as e:
            raise CheckpointError(f"cannot move checkpoint step {step} in {self._directory} aside: {e}") from e
        self._reopen()  # orbax caches the step list
        return target

    def _reopen(self) -> None:
        try:
            self._mngr.close()
        except Exception:  # nothing pending here; a close error must not hide the real one
            pass
        self._mngr = self._open()

    def restore_newest_good(
        self, template_state: State, move_aside: bool = True
    ) -> tuple[State, dict[str, Any], int, list[str]]:
        """(state, meta, step, skipped) of the newest checkpoint that reads and verifies.

        Each unusable newer step is logged in one line and, with ``move_aside``
        (trainers; readers pass False), renamed by :meth:`move_aside`;
        ``skipped`` says what happened to each. A :class:`CheckpointMismatchError`
        (another config) is raised at once, as it is no corruption. If no step
        is usable, raises :class:`CheckpointError` naming every one.
        """
        self.wait()
        steps = self.all_steps()
        if not steps:
            raise CheckpointError(f"no complete checkpoint in {self._directory}")
        skipped: list[str] = []
        for step in reversed(steps):
            try:
                state, meta = self.restore(template_state, step)
            except CheckpointMismatchError:
                raise
            except CheckpointError as e:
                moved = self.move_aside(step) if move_aside else None
                fate = f"moved to {moved.name}" if moved else "left in place"
                skipped.append(f"step {step} ({fate})")
                log.warning("%s; %s, %s", e, fate,
                            "trying an older one" if step != steps[0] else "no older checkpoint")
                continue
            if skipped:
                log.warning("resuming from checkpoint step %d in %s instead of the unusable %s",
                            step, self._directory, ", ".join(skipped))
            return state, meta, step, skipped
        raise CheckpointError(
            f"no usable checkpoint in {self._directory}: {', '.join(skipped)}; all are still on disk")

    def close(self) -> None:
        """Waits for the pending save (raising if it failed) and releases orbax's resources."""
        try:
            self.wait()
        finally:
            self._mngr.close()

    def __enter__(self) -> "Checkpointer":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()
