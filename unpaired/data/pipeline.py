"""The unpaired batch loader over N named domains: deterministic per step, resumable, prefetched.

Sampling follows the reference's UnalignedDataset + DataLoader, generalised from (A, B) to an
ordered set of domains D_0, D_1, ...; every batch is a pure function of (seed, step, domain
sizes, options), so a run resumed at step k reads exactly the batches an uninterrupted run would:

- An epoch has `max_i |D_i|` samples and `steps_per_epoch = max_i |D_i| // batch_size`
  steps (drop_last=True: every batch is full; the reference keeps the ragged last batch).
- Step k is epoch `e = k // steps_per_epoch`, positions `p = (k % steps_per_epoch) * batch_size
  + 0..batch_size-1` of that epoch.
- D_0's index: `perm_e[p] % |D_0|` with `perm_e = default_rng([seed, e]).permutation(max_i |D_i|)`,
  or `p % |D_0|` with serial_batches.
- D_i's index (i > 0): uniform in [0, |D_i|) from `default_rng([seed, e, p, i])`, or `p % |D_i|`
  with serial_batches. D_0's crop/flip use `default_rng([seed, e, p, 0])`, D_i's continue on its
  generator after its index draw: domains are augmented independently. With domains (A, B) this
  is exactly the CycleGAN rule (A = D_0, B = D_1).
- Domains listed in `labels` also deliver `<domain>_label` (int32 [n]): the label of the image
  actually delivered.
- With shard_count hosts each host takes the contiguous slice `shard_index` of every global
  batch (batch_size is the global batch size).
- An unreadable image (DataError from decoding or preprocessing) is, with bad_image='skip',
  replaced by the next readable index of the same domain (wrapping around; its label comes
  with it) and counted; with
  bad_image='error' the DataError (naming the file) propagates.
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import threading
import weakref
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
from PIL import Image

from unpaired.data.errors import DataError
from unpaired.data.sources import DomainSource, as_image
from unpaired.data.spec import DataSpec

logger = logging.getLogger(__name__)

Batch = dict[str, np.ndarray]
# transform(image, rng) -> float32 HxWxC array; e.g. transforms.Preprocess.
Transform = Callable[[Image.Image, np.random.Generator], np.ndarray]
BAD_IMAGE_POLICIES = ("skip", "error")


def _source_name(source: Any) -> str:
    """A source's `name`, or its type for sources without one."""
    return str(getattr(source, "name", type(source).__name__))


def _item_name(source: Any, index: int) -> str:
    """A source's `item_name(index)`, or `name[index]` for sources without one."""
    item_name = getattr(source, "item_name", None)
    return item_name(index) if callable(item_name) else f"{_source_name(source)}[{index}]"


def _positive_int(value: Any, what: str, *, allow_zero: bool = False) -> int:
    """Check an integer argument, naming it in the error."""
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if not ok or value < (0 if allow_zero else 1):
        raise DataError(f"{what} must be an integer >= {0 if allow_zero else 1}, got {value!r}")
    return int(value)


class BatchIterator(Iterator[Batch]):
    """Batches from `start` on, built ahead by a thread pool into a bounded window of futures."""

    def __init__(
        self,
        make_batch: Callable[[int], Batch],
        start: int,
        stop: int | None,
        num_workers: int,
        depth: int,
    ) -> None:
        """Start the pool (none when num_workers == 0: batches are then built on demand)."""
        self._make_batch = make_batch
        self.step = start  # the step of the batch the next __next__ returns
        self._next_submit = start
        self._stop = stop
        self._depth = depth
        self._pending: collections.deque[concurrent.futures.Future[Batch]] = collections.deque()
        self._pool = (
            concurrent.futures.ThreadPoolExecutor(num_workers, thread_name_prefix="unpaired-data")
            if num_workers > 0 else None
        )
        self._closed = False
        self._lock = threading.Lock()

    def _fill(self) -> None:
        """Submit steps until `depth` batches are in flight (or the stop step is reached)."""
        assert self._pool is not None
        while len(self._pending) < self._depth and (self._stop is None or self._next_submit < self._stop):
            self._pending.append(self._pool.submit(self._make_batch, self._next_submit))
            self._next_submit += 1

    def __iter__(self) -> "BatchIterator":
        """An iterator is its own iterable."""
        return self

    def __next__(self) -> Batch:
        """The batch of step `self.step`; errors from workers re-raise here and close the iterator."""
        with self._lock:
            if self._closed or (self._stop is not None and self.step >= self._stop):
                raise StopIteration
            if self._pool is None:
                batch = self._make_batch(self.step)
            else:
                self._fill()
                future = self._pending.popleft()
        if self._pool is not None:
            try:
                batch = future.result()
            except concurrent.futures.CancelledError:
                raise StopIteration from None  # closed from another thread meanwhile
            except BaseException:
                self.close()
                raise
        with self._lock:
            self.step += 1
            if self._pool is not None and not self._closed:
                self._fill()
        return batch

    def close(self) -> None:
        """Cancel queued work and join the worker threads (waits only for batches being built)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for future in self._pending:
                future.cancel()
            self._pending.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> "BatchIterator":
        """Use as a context manager to close on exit."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Close on leaving the with-block."""
        self.close()

    def __del__(self) -> None:
        """Release the threads of an iterator dropped without close()."""
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


def source_labels(source: Any) -> np.ndarray | None:
    """A source's integer labels (one per image), or None when it has none."""
    labels = getattr(source, "labels", None)
    return None if labels is None else np.asarray(labels)


def _domain_mapping(value: Any, what: str) -> dict[str, Any]:
    """A {domain: value} dict from a mapping (its order kept); DataError naming `what` otherwise."""
    if not isinstance(value, Mapping) or not value:
        raise DataError(f"{what} must be a non-empty mapping from domain name to value, got {type(value).__name__}")
    return dict(value)


class UnpairedLoader:
    """Deterministic unpaired batches {domain: float32 [N,H,W,C] in [-1, 1], '<domain>_label': int32 [N]}.

    `sources` maps domain names, in order, to their sources (the first domain follows the epoch
    permutation). `UnpairedLoader(source_A, source_B, transform_A=..., transform_B=...)` is the
    two-domain (A, B) form CycleGAN uses.
    """

    def __init__(
        self,
        sources: Mapping[str, DomainSource] | DomainSource,
        source_B: DomainSource | None = None,
        *,
        batch_size: int,
        seed: int,
        transforms: Mapping[str, Transform] | Transform | None = None,
        transform_A: Transform | None = None,
        transform_B: Transform | None = None,
        labels: Sequence[str] = (),
        serial_batches: bool = False,
        num_workers: int = 2,
        shard_index: int = 0,
        shard_count: int = 1,
        bad_image: str = "skip",
        prefetch: int | None = None,
    ) -> None:
        """Validate the options; nothing is decoded until a batch is asked for."""
        if source_B is not None:  # the (A, B) form
            if transforms is not None or transform_A is None or transform_B is None:
                raise DataError("UnpairedLoader(source_A, source_B) needs transform_A and transform_B (not transforms)")
            sources, transforms = {"A": sources, "B": source_B}, {"A": transform_A, "B": transform_B}
        elif transform_A is not None or transform_B is not None:
            raise DataError("transform_A/transform_B go with UnpairedLoader(source_A, source_B); pass transforms=")
        self.sources: dict[str, DomainSource] = _domain_mapping(sources, "sources")
        self.domains: tuple[str, ...] = tuple(self.sources)
        if transforms is None:
            raise DataError("UnpairedLoader needs transforms (one transform, or one per domain)")
        if callable(transforms) and not isinstance(transforms, Mapping):
            transforms = {d: transforms for d in self.domains}
        self.transforms: dict[str, Transform] = _domain_mapping(transforms, "transforms")
        if set(self.transforms) != set(self.domains):
            raise DataError(f"transforms name {sorted(self.transforms)}, but the domains are {list(self.domains)}")
        self.sizes = {d: len(s) for d, s in self.sources.items()}
        for d, n in self.sizes.items():
            if n == 0:
                raise DataError(f"domain {d} ({_source_name(self.sources[d])}) has no images")
        self.labels: dict[str, np.ndarray] = {}
        for d in labels:
            if d not in self.sources:
                raise DataError(f"labels asked for domain {d!r}, which is not one of {list(self.domains)}")
            found = source_labels(self.sources[d])
            if found is None:
                raise DataError(f"domain {d} ({_source_name(self.sources[d])}) has no labels, but they are needed")
            if found.ndim != 1 or len(found) != self.sizes[d] or not np.issubdtype(found.dtype, np.integer):
                raise DataError(
                    f"domain {d} ({_source_name(self.sources[d])}): labels must be integers, one per image "
                    f"({self.sizes[d]}), got {found.dtype} {found.shape}"
                )
            self.labels[d] = found.astype(np.int32)
        self.batch_size = _positive_int(batch_size, "batch_size")
        self.seed = _positive_int(seed, "seed", allow_zero=True)
        self.num_workers = _positive_int(num_workers, "num_workers (config.data.num_workers)", allow_zero=True)
        self.shard_count = _positive_int(shard_count, "shard_count")
        self.shard_index = _positive_int(shard_index, "shard_index", allow_zero=True)
        if self.shard_index >= self.shard_count:
            raise DataError(f"shard_index={shard_index} must be < shard_count={shard_count}")
        if self.batch_size % self.shard_count:
            raise DataError(
                f"the global batch_size={batch_size} must be divisible by shard_count={shard_count} "
                "(the number of hosts)"
            )
        if bad_image not in BAD_IMAGE_POLICIES:
            raise DataError(f"config.data.bad_image={bad_image!r} must be 'skip' or 'error'")
        self.bad_image = bad_image
        self.serial_batches = bool(serial_batches)
        self.local_batch_size = self.batch_size // self.shard_count
        self.num_samples = max(self.sizes.values())
        self.steps_per_epoch = self.num_samples // self.batch_size
        if self.steps_per_epoch == 0:
            sizes = ", ".join(f"|{d}|={n}" for d, n in self.sizes.items())
            raise DataError(
                f"batch_size={batch_size} is larger than the epoch ({self.num_samples} samples = "
                f"max({sizes})); use a smaller batch_size"
            )
        self.prefetch = _positive_int(
            prefetch if prefetch is not None else max(2, 2 * self.num_workers), "prefetch"
        )
        self._lock = threading.Lock()
        self._perm_cache: collections.OrderedDict[int, np.ndarray] = collections.OrderedDict()
        self._bad: dict[str, set[int]] = {d: set() for d in self.domains}
        self._skipped = 0
        self._iterators: weakref.WeakSet[BatchIterator] = weakref.WeakSet()

    # ----- what is read where: pure functions of (seed, step) -------------------------------

    def _permutation(self, epoch: int) -> np.ndarray:
        """The epoch's sample order (identity with serial_batches); two epochs are memoised."""
        if self.serial_batches:
            return np.arange(self.num_samples)
        with self._lock:
            perm = self._perm_cache.get(epoch)
        if perm is None:
            perm = np.random.default_rng([self.seed, epoch]).permutation(self.num_samples)
            with self._lock:
                self._perm_cache[epoch] = perm
                while len(self._perm_cache) > 2:
                    self._perm_cache.popitem(last=False)
        return perm

    def positions(self, step: int) -> tuple[int, np.ndarray]:
        """(epoch, this host's sample positions within that epoch) for global step `step`."""
        if not isinstance(step, (int, np.integer)) or step < 0:
            raise DataError(f"step must be a non-negative integer, got {step!r}")
        epoch, j = divmod(int(step), self.steps_per_epoch)
        first = j * self.batch_size + self.shard_index * self.local_batch_size
        return epoch, np.arange(first, first + self.local_batch_size)

    def indices(self, step: int) -> dict[str, list[int]]:
        """The source indices (before any bad-image replacement) of this host's batch `step`."""
        epoch, positions = self.positions(step)
        perm = self._permutation(epoch)
        first = self.domains[0]
        out: dict[str, list[int]] = {d: [] for d in self.domains}
        for p in positions:
            out[first].append(int(perm[p]) % self.sizes[first])
            for d in self.domains[1:]:
                out[d].append(self._drawn_index(d, int(p), self._rng(epoch, int(p), d)))
        return out

    def _rng(self, epoch: int, position: int, domain: str) -> np.random.Generator:
        """The per-sample generator of one domain (its stream number is its place in the order)."""
        return np.random.default_rng([self.seed, epoch, position, self.domains.index(domain)])

    def _drawn_index(self, domain: str, position: int, rng: np.random.Generator) -> int:
        """A later domain's index: serial, or a uniform draw (the first draw of its generator)."""
        if self.serial_batches:
            return position % self.sizes[domain]
        return int(rng.integers(self.sizes[domain]))

    # ----- building batches -------------------------------------------------------------------

    @property
    def skipped(self) -> int:
        """How many times an unreadable image was replaced by the next readable one."""
        with self._lock:
            return self._skipped

    @property
    def bad_items(self) -> dict[str, list[str]]:
        """Names of the unreadable images found so far, per domain."""
        with self._lock:
            bad = {d: sorted(s) for d, s in self._bad.items()}
        return {d: [_item_name(self.sources[d], i) for i in idx] for d, idx in bad.items()}

    def _sample(self, domain: str, index: int, epoch: int, position: int) -> tuple[np.ndarray, int]:
        """(image, index actually read): decode and transform, replacing unreadable ones per bad_image."""
        source, n = self.sources[domain], self.sizes[domain]
        for attempt in range(n):
            i = (index + attempt) % n
            with self._lock:
                known_bad = i in self._bad[domain]
            if known_bad:
                self._count_skip()
                continue
            rng = self._rng(epoch, position, domain)
            if domain != self.domains[0]:
                self._drawn_index(domain, position, rng)  # keep its draws aligned after the index draw
            try:
                return self._load_and_transform(domain, i, rng), i
            except DataError as err:
                if self.bad_image == "error":
                    raise
                self._mark_bad(domain, i, err)
        raise DataError(
            f"domain {domain} ({_source_name(source)}): none of its {n} images could be read and preprocessed"
        )

    def _load_and_transform(self, domain: str, i: int, rng: np.random.Generator) -> np.ndarray:
        """Read image i of a domain and apply its transform; DataErrors name the image."""
        source = self.sources[domain]
        item = source[i]
        if not isinstance(item, Image.Image):
            arr = np.asarray(item)
            item = as_image(arr, 1 if arr.ndim == 2 or arr.shape[-1] == 1 else 3, name=_item_name(source, i))
        try:
            return self.transforms[domain](item, rng)
        except DataError as err:
            raise DataError(f"{_item_name(source, i)}: {err}") from err

    def _mark_bad(self, domain: str, i: int, err: DataError) -> None:
        """Remember an unreadable image, count the skip, and warn once per image."""
        with self._lock:
            first = i not in self._bad[domain]
            self._bad[domain].add(i)
            self._skipped += 1
        if first:
            logger.warning("skipping unreadable image in domain %s: %s", domain, err)

    def _count_skip(self) -> None:
        """Count one replacement of an already-known bad image."""
        with self._lock:
            self._skipped += 1

    def batch(self, step: int) -> Batch:
        """This host's part of global batch `step`: {domain: float32 [n,H,W,C], '<domain>_label': int32 [n]}."""
        epoch, positions = self.positions(step)
        indices = self.indices(step)
        out: Batch = {}
        for d in self.domains:
            samples = [self._sample(d, indices[d][k], epoch, int(p)) for k, p in enumerate(positions)]
            out[d] = self._stack(d, [x for x, _ in samples])
            if d in self.labels:
                out[DataSpec.label_key(d)] = self.labels[d][[i for _, i in samples]]
        return out

    def _stack(self, domain: str, xs: list[np.ndarray]) -> np.ndarray:
        """Stack samples, explaining the usual cause when their sizes differ."""
        shapes = {x.shape for x in xs}
        if len(shapes) > 1:
            raise DataError(
                f"domain {domain}: images in one batch have different sizes {sorted(shapes)}; "
                "config.data.preprocess 'none' and 'scale_width' keep per-image sizes, so use "
                "batch_size 1 or a cropping mode (resize_and_crop, crop, scale_width_and_crop)"
            )
        return np.stack(xs).astype(np.float32, copy=False)

    def iterate(self, start_step: int = 0, num_steps: int | None = None) -> BatchIterator:
        """Batches start_step, start_step+1, ... (num_steps of them, or endless), prefetched."""
        start = _positive_int(start_step, "start_step", allow_zero=True)
        stop = None if num_steps is None else start + _positive_int(num_steps, "num_steps", allow_zero=True)
        it = BatchIterator(self.batch, start, stop, self.num_workers, self.prefetch)
        self._iterators.add(it)
        return it

    def close(self) -> None:
        """Close every iterator this loader handed out."""
        for it in list(self._iterators):
            it.close()

    def __enter__(self) -> "UnpairedLoader":
        """Use as a context manager to close all iterators on exit."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Close on leaving the with-block."""
        self.close()
