"""Packing of arrays into the `bytes` fields of the internal protos.

Every array crosses a process boundary as little-endian bytes: uint32 for token
ids and offsets, float32 for tensors. Decoding never trusts the sender: sizes are
checked and a bad message raises `ValueError`.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from embedserve.proto.gen_pb import backend_pb2

UINT32 = np.dtype("<u4")
FLOAT32 = np.dtype("<f4")

U32Array = npt.NDArray[np.uint32]
F32Array = npt.NDArray[np.float32]


def pack_u32(values: npt.ArrayLike) -> bytes:
    return np.asarray(values, dtype=UINT32).tobytes()


def unpack_u32(data: bytes) -> U32Array:
    if len(data) % UINT32.itemsize:
        raise ValueError(f"uint32 buffer of {len(data)} bytes is not a multiple of 4")
    return np.frombuffer(data, dtype=UINT32)


def pack_tensor(array: npt.ArrayLike) -> backend_pb2.Tensor:
    contiguous = np.ascontiguousarray(array, dtype=FLOAT32)
    return backend_pb2.Tensor(data=contiguous.tobytes(), shape=list(contiguous.shape))


def unpack_tensor(tensor: backend_pb2.Tensor) -> F32Array:
    shape = tuple(int(d) for d in tensor.shape)
    expected = math.prod(shape) * FLOAT32.itemsize  # np.prod costs more than the tensor on small shapes
    if len(tensor.data) != expected:
        raise ValueError(f"tensor of shape {shape} needs {expected} bytes, got {len(tensor.data)}")
    return np.frombuffer(tensor.data, dtype=FLOAT32).reshape(shape)
