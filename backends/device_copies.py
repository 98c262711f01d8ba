"""Moving a batch's arrays to the device and its results back (backends/pipeline.py
says why the copies run on their own stream). Apart from the pipeline's `Pending`,
so that engines without torch (ONNX, static) never import it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np
import torch


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
