"""Overlapping a batch's host<->device copies with the previous batch's compute (CUDA).

The router keeps two batches in flight per backend. Run one after the other, a
batch waits for its upload, then the GPU waits while its results are copied out and
the next batch is decoded and uploaded. Here a batch is *launched* on the forward
thread (inputs copied from pinned host memory on a side stream, kernels queued on
the compute stream, results queued back to pinned host memory on the side stream),
which returns at once with a `Pending`; another thread waits for the copy-out to
finish. So while batch k computes, batch k+1 is already uploaded and queued behind
it, and batch k-1's results are on their way to the host.

The CUDA calls all sit in `CopyStreams`, the one seam: `HostCopies` does the same
job synchronously, so the launch/finish logic runs and is tested on CPU.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import numpy as np
import torch

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


class Copies(Protocol):
    """Moving a batch's arrays to the device and its results back."""

    def upload(self, array: np.ndarray) -> torch.Tensor:
        """A device tensor the compute stream may use as soon as the copy lands."""

    def download(self, tensors: Sequence[torch.Tensor]) -> Callable[[], list[np.ndarray]]:
        """Queue the copy-out of `tensors` once the compute queued so far is done; the
        returned call blocks until the arrays are on the host."""


class HostCopies:
    """The CPU stand-in: tensors are already where they are needed."""

    def __init__(self, device: str) -> None:
        self._device = device

    def upload(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array)).to(self._device)

    def download(self, tensors: Sequence[torch.Tensor]) -> Callable[[], list[np.ndarray]]:
        arrays = [t.cpu().numpy() for t in tensors]
        return lambda: arrays


class CopyStreams:
    """Copies on a side stream, ordered against the compute stream by events."""

    def __init__(self, device: str) -> None:
        self._device = torch.device(device)
        self._compute = torch.cuda.current_stream(self._device)
        self._copy = torch.cuda.Stream(self._device)

    def upload(self, array: np.ndarray) -> torch.Tensor:
        # Pinned memory makes the copy truly asynchronous; torch's host allocator
        # keeps the pinned block until the copy has used it.
        host = torch.from_numpy(np.ascontiguousarray(array)).pin_memory()
        with torch.cuda.stream(self._copy):
            tensor = host.to(self._device, non_blocking=True)
        self._compute.wait_event(self._copy.record_event())
        # Allocated on the copy stream, used on the compute stream: the caching
        # allocator must not hand the memory out again before compute is done with it.
        tensor.record_stream(self._compute)
        return tensor

    def download(self, tensors: Sequence[torch.Tensor]) -> Callable[[], list[np.ndarray]]:
        self._copy.wait_event(self._compute.record_event())
        hosts: list[torch.Tensor] = []
        with torch.cuda.stream(self._copy):
            for tensor in tensors:
                host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
                host.copy_(tensor, non_blocking=True)
                tensor.record_stream(self._copy)
                hosts.append(host)
        done = self._copy.record_event()

        def finish() -> list[np.ndarray]:
            done.synchronize()
            return [host.numpy() for host in hosts]

        return finish


def copies_for(device: str) -> Copies:
    return CopyStreams(device) if device.startswith("cuda") else HostCopies(device)
