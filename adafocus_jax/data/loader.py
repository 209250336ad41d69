"""A deterministic, resumable, multi-process-aware batch loader over a random-access source.

Everything a batch contains is a pure function of `(seed, epoch, example index)`:
  * the order of epoch e is a permutation drawn from `np.random.default_rng([seed, e])` (or the
    natural order without shuffling);
  * every random draw for one example (frame indices, crops, flips) comes from
    `np.random.default_rng([seed, e, index])`.
So a run resumed at `start_step` sees exactly the batches an uninterrupted run would, whatever the
number of worker threads, and process p of P always reads rows `[p·b, (p+1)·b)` of each global batch
of size `P·b`.

Bad videos: with `on_error="raise"` (default) the source's `DataError` (which names the file/line)
propagates. With `on_error="skip"` the example is replaced by zeros with `mask=False` (never by
another video), logged, counted, and reported at the end of each epoch (`Loader.skip_report`);
training and evaluation steps weight every example by `mask`.
"""

import collections
import concurrent.futures
import logging
import math
import os
from typing import Any, Iterator

import numpy as np

from adafocus_jax.data.errors import DataError

ON_ERROR = ("raise", "skip")


def _collate(examples: list[dict], mask: list[bool]) -> dict[str, np.ndarray]:
    batch = {key: np.stack([np.asarray(e[key]) for e in examples]) for key in examples[0]}
    batch["mask"] = np.asarray(mask, bool)
    return batch


class Loader:
    """Iterates over per-process batches (dicts of numpy arrays with a leading batch axis).

    Attributes:
      steps_per_epoch: global batches per epoch (a partial last batch counts only without
        `drop_remainder`, padded with `mask=False` rows).
      skipped: `[(epoch, index, message)]` of every example skipped so far (`on_error="skip"`).
    """

    def __init__(self, source, *, batch_size: int, shuffle: bool, seed: int, start_step: int = 0,
                 drop_remainder: bool = True, process_index: int = 0, process_count: int = 1,
                 num_workers: int = 0, num_epochs: int | None = None, augment: bool | None = None,
                 on_error: str = "raise", prefetch_batches: int = 2):
        """
        Args:
          source: `len(source)` and `source.get(index, rng) -> example dict` (numpy values).
          batch_size: the GLOBAL batch size (all processes); each process yields
            `batch_size // process_count` rows.
          shuffle: reshuffle every epoch.
          seed: the run's data seed.
          start_step: global step to resume from (skips that many batches without reading them).
          drop_remainder: drop the last partial batch (training) or pad it with `mask=False` rows.
          process_index, process_count: this host and the number of hosts.
          num_workers: threads that read examples (0 = read in the calling thread, < 0 = one
            per CPU core, `os.cpu_count()`).
          num_epochs: stop after this many epochs (None = forever).
          augment: pass a per-example `rng` to the source (train augmentation); default `shuffle`.
          on_error: "raise" or "skip" (see module docstring).
          prefetch_batches: batches read ahead when `num_workers > 0`.
        """
        if batch_size <= 0 or batch_size % process_count:
            raise ValueError(f"global batch size {batch_size} must be a positive multiple of the "
                             f"process count {process_count}")
        if not 0 <= process_index < process_count:
            raise ValueError(f"process_index {process_index} not in [0, {process_count})")
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        self.source = source
        self.num_examples = len(source)
        if self.num_examples == 0:
            raise DataError(getattr(source, "origin", type(source).__name__),
                            "the split is empty (no usable video)")
        self.batch_size = batch_size
        self.local_batch_size = batch_size // process_count
        self.shuffle = shuffle
        self.augment = shuffle if augment is None else augment
        self.seed = int(seed)
        self.start_step = int(start_step)
        self.drop_remainder = drop_remainder
        self.process_index = process_index
        self.process_count = process_count
        self.num_workers = int(num_workers) if int(num_workers) >= 0 else (os.cpu_count() or 1)
        self.num_epochs = num_epochs
        self.on_error = on_error
        self.prefetch_batches = max(1, int(prefetch_batches))
        if drop_remainder:
            self.steps_per_epoch = self.num_examples // batch_size
            if self.steps_per_epoch == 0:
                raise DataError(getattr(source, "origin", type(source).__name__),
                                f"the split has {self.num_examples} videos, fewer than one batch "
                                f"of {batch_size}")
        else:
            self.steps_per_epoch = math.ceil(self.num_examples / batch_size)
        self.skipped: list[tuple[int, int, str]] = []
        self._template = None  # last usable example: shapes for all-skipped batches

    def __len__(self) -> int:
        if self.num_epochs is None:
            raise TypeError("an endless loader has no length")
        return self.num_epochs * self.steps_per_epoch - self.start_step

    # ---------------------------------------------------------------------------------------
    def epoch_order(self, epoch: int) -> np.ndarray:
        """Example indices of `epoch` in reading order, `[num_examples]`."""
        if not self.shuffle:
            return np.arange(self.num_examples)
        return np.random.default_rng([self.seed, epoch]).permutation(self.num_examples)

    def batch_indices(self, step: int) -> np.ndarray:
        """This process's example indices of global batch `step`; -1 marks padding rows."""
        epoch, k = divmod(step, self.steps_per_epoch)
        order = self.epoch_order(epoch)
        rows = order[k * self.batch_size:(k + 1) * self.batch_size]
        rows = np.concatenate([rows, -np.ones(self.batch_size - len(rows), rows.dtype)])
        lo = self.process_index * self.local_batch_size
        return rows[lo:lo + self.local_batch_size]

    def _read(self, epoch: int, index: int) -> tuple[Any, str | None]:
        rng = np.random.default_rng([self.seed, epoch, int(index)]) if self.augment else None
        try:
            return self.source.get(int(index), rng), None
        except DataError as e:
            if self.on_error == "raise":
                raise
            return None, str(e)

    def _assemble(self, step: int, results: list[tuple[Any, str | None]],
                  indices: np.ndarray) -> dict[str, np.ndarray]:
        epoch = step // self.steps_per_epoch
        template = next((ex for ex, _ in results if ex is not None), None)
        if template is not None:
            self._template = template
        else:
            # A batch with no usable video (e.g. the last eval batch: one bad row + padding):
            # its rows are still zeros with mask False; only their shapes come from elsewhere.
            template = self._shape_template(epoch)
            if template is None:
                raise DataError(getattr(self.source, "origin", type(self.source).__name__),
                                f"every video of batch {step} is unusable: "
                                + "; ".join(msg for _, msg in results if msg))
        examples, mask = [], []
        for index, (example, message) in zip(indices, results):
            if example is None:
                if message is not None:
                    logging.warning("skipping video %d (epoch %d): %s", index, epoch, message)
                    self.skipped.append((epoch, int(index), message))
                example = {k: np.zeros_like(np.asarray(v)) for k, v in template.items()}
                if "label" in example:
                    example["label"] = np.asarray(0, np.asarray(template["label"]).dtype)
                if "labels" in example:
                    example["labels"] = np.full_like(np.asarray(template["labels"]), -1)
                example["index"] = np.asarray(-1 if index < 0 else index, np.int64)
                mask.append(False)
            else:
                mask.append(True)
            examples.append(example)
        return _collate(examples, mask)

    def _shape_template(self, epoch: int):
        """An example whose shapes/dtypes the zero rows copy: the last usable one, else the first
        readable video of the split (read only for its shapes, never used as data)."""
        if self._template is not None:
            return self._template
        for index in range(self.num_examples):
            example, _ = self._read(epoch, index)
            if example is not None:
                self._template = example
                return example
        return None

    def skip_report(self, epoch: int | None = None) -> str:
        """A one-line summary of the skipped videos (of one epoch, or all)."""
        items = [s for s in self.skipped if epoch is None or s[0] == epoch]
        if not items:
            return "no video skipped"
        shown = "; ".join(f"#{i}: {m}" for _, i, m in items[:5])
        more = f" (+{len(items) - 5} more)" if len(items) > 5 else ""
        return f"{len(items)} video(s) skipped: {shown}{more}"

    def _end_of_epoch(self, step: int):
        if (step + 1) % self.steps_per_epoch == 0:
            epoch = step // self.steps_per_epoch
            if any(s[0] == epoch for s in self.skipped):
                logging.warning("data epoch %d: %s", epoch, self.skip_report(epoch))

    def _steps(self) -> Iterator[int]:
        step = self.start_step
        while self.num_epochs is None or step < self.num_epochs * self.steps_per_epoch:
            yield step
            step += 1

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        if self.num_workers <= 0:
            for step in self._steps():
                indices = self.batch_indices(step)
                epoch = step // self.steps_per_epoch
                results = [self._read(epoch, i) if i >= 0 else (None, None) for i in indices]
                yield self._assemble(step, results, indices)
                self._end_of_epoch(step)
            return
        with concurrent.futures.ThreadPoolExecutor(self.num_workers) as pool:
            pending = collections.deque()
            steps = self._steps()

            def submit():
                step = next(steps, None)
                if step is None:
                    return
                indices = self.batch_indices(step)
                epoch = step // self.steps_per_epoch
                futures = [pool.submit(self._read, epoch, i) if i >= 0 else None for i in indices]
                pending.append((step, indices, futures))

            for _ in range(self.prefetch_batches):
                submit()
            try:
                while pending:
                    step, indices, futures = pending.popleft()
                    submit()
                    results = [f.result() if f is not None else (None, None) for f in futures]
                    yield self._assemble(step, results, indices)
                    self._end_of_epoch(step)
            finally:
                for _, _, futures in pending:
                    for f in futures:
                        if f is not None:
                            f.cancel()


def make_loader(source, **kwargs) -> Loader:
    """`Loader(source, **kwargs)`; see `Loader.__init__` for the arguments."""
    return Loader(source, **kwargs)
