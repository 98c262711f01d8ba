"""One batch from the router as a job of the forward scheduler (backends/scheduler.py).

A batch that fits in one slice (every interactive batch, and bulk batches smaller
than a slice) is launched whole, exactly as before slicing existed. A bigger bulk batch
is launched slice by slice (backends/slicing.py), one slice per scheduler step, and
its answer is the slices' answers joined back into batch order.

Engines that launch ahead on a GPU (backends/pipeline.py) return from a launch as soon
as the work is queued on the device. Queued slices would all sit in front of a query
launched later, so a sliced batch keeps at most two slices on the device: before a
step returns, every slice but the one just launched has its results collected. The
device still always has the next slice queued behind the running one.

Model CPU seconds (backends/model_cpu.py) are read after every step, so a batch is
charged for its own slices and not for the interactive work run between them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from embedserve.backends.base import ModelBatch
from embedserve.backends.pipeline import Pending, ready
from embedserve.backends.slicing import IndexArray, Slice, slice_order, take_slice

R = TypeVar("R")

Join = Callable[[ModelBatch, Sequence[Slice], Sequence[R]], R]


class BatchJob(Generic[R]):
    """Runs `launch` on a batch, whole or in slices; answers (its Pending, model CPU s)."""

    def __init__(
        self,
        batch: ModelBatch,
        launch: Callable[[ModelBatch], Pending[R]],
        join: Join[R],
        padded: bool,
        take_model_cpu: Callable[[], float],
    ) -> None:
        self._batch = batch
        self._launch = launch
        self._join = join
        self._padded = padded
        self._take_model_cpu = take_model_cpu
        self._order: IndexArray | None = None
        self._next = 0  # position in `_order` of the next slice's first sequence
        self._slices: list[Slice] = []
        self._pending: list[Pending[R]] = []
        self._outputs: list[R] = []  # results of `_pending[: len(_outputs)]`, collected
        self._whole: Pending[R] | None = None
        self._model_cpu_s = 0.0

    @property
    def slices(self) -> int:
        return len(self._slices) or 1

    def step(self, max_cost: int | None) -> tuple[int, bool]:
        """Launch the whole batch or its next slice. Returns the tokens whose results
        came back during the step (what its duration measured: on a device that
        launches ahead, the previous slice's) and whether the batch is all launched."""
        batch = self._batch
        try:
            if self._order is None and (max_cost is None or batch.cost(self._padded) <= max_cost):
                self._whole = self._launch(batch)
                return (batch.cost(self._padded) if self._whole.done else 0), True
            if self._order is None:
                self._order = slice_order(batch)
            part = take_slice(batch, self._order, self._next, max_cost or batch.cost(self._padded), self._padded)
            self._next += part.batch.size
            self._slices.append(part)
            launched = self._launch(part.batch)
            self._pending.append(launched)
            finished_tokens = part.batch.cost(self._padded) if launched.done else 0
            # Launched ahead on a device: bound what a later query queues behind.
            while len(self._outputs) < len(self._pending) - 1:
                index = len(self._outputs)
                earlier = self._pending[index]
                if not earlier.done:
                    finished_tokens += self._slices[index].batch.cost(self._padded)
                self._outputs.append(earlier.result())
            return finished_tokens, self._next >= batch.size
        finally:
            self._model_cpu_s += self._take_model_cpu()

    def result(self) -> tuple[Pending[R], float]:
        if self._whole is not None:
            return self._whole, self._model_cpu_s
        collected, left = list(self._outputs), self._pending[len(self._outputs) :]
        batch, slices, join = self._batch, list(self._slices), self._join
        if all(pending.done for pending in left):
            # On the forward thread, not the event loop that would call `result()`.
            return ready(join(batch, slices, collected + [pending.result() for pending in left])), self._model_cpu_s

        def finish() -> R:
            return join(batch, slices, collected + [pending.result() for pending in left])

        return Pending(finish), self._model_cpu_s
