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
  (or, for dtypes, a silent cast).

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
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any, Mapping, NoReturn, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

__all__ = [
    "CHECKPOINT_SUBDIR",
    "CheckpointError",
    "CheckpointMismatchError",
    "Checkpointer",
    "checkpoint_dir",
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
_ITEMS = ("state", "meta", "layout")
_LAYOUT_FORMAT = 1
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
        if ckpt.latest_step() is not None:
            state, meta = ckpt.restore(jax.eval_shape(create_state, config, key))
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

    def __init__(self, directory: str | os.PathLike, keep: int | None = 3, async_save: bool = True):
        """Opens ``directory`` (created if missing); ``keep=None`` keeps every checkpoint."""
        if keep is not None and keep < 1:
            raise ValueError(f"keep must be >= 1 or None, got {keep}")
        self._directory = Path(directory).absolute()
        self._keep = keep
        self._async = async_save
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
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(_drop_empty(state)),
            meta=ocp.args.JsonSave(meta),
            layout=ocp.args.JsonSave(
                {"format": _LAYOUT_FORMAT, "leaves": [list(leaf) for leaf in state_layout(state)]}
            ),
        )
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
            raise CheckpointError(
                f"cannot read checkpoint step {step} in {self._directory}: {type(e).__name__}: {e}"
            ) from e

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
            raise CheckpointError(f"cannot read {where}: {type(e).__name__}: {e}") from e
        return _refill_empty(restored, template_state), dict(side.meta)

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
