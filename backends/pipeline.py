"""Overlapping a batch's host<->device copies with the previous batch's compute (CUDA).

The router keeps two batches in flight per backend. Run one after the other, a
batch waits for its upload, then the GPU waits while its results are copied out and
the next batch is decoded and uploaded. Here a batch is *launched* on the forward
thread (inputs copied from pinned host memory on a side stream, kernels queued on
the compute stream, results queued back to pinned host memory on the side stream),
which returns at once with a `Pending`; another thread waits for the copy-out to
finish. So while batch k computes, batch k+1 is already uploaded and queued behind
it, and batch k-1's results are on their way to the host.

The CUDA calls all sit in `CopyStreams` (backends/device_copies.py), the one seam: `HostCopies` does the same
job synchronously, so the launch/finish logic runs and is tested on CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Pending(Generic[T]):
    """A launched batch's result; `result()` blocks until it is on the host."""

    finish: Callable[[], T]
    done: bool = False  # the result is on the host already: no need to wait on another thread

    def result(self) -> T:
        return self.finish()


def ready(value: T) -> Pending[T]:
    return Pending(lambda: value, done=True)
