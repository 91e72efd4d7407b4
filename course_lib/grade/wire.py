"""Plain data across the process boundary between the grader and the worker that runs learner code.

Only these types cross, and they are rebuilt from scratch on the other side (never unpickled):
None, bool, int, float, complex, str, bytes, list, tuple, dict, torch.Tensor (CPU, dense,
strided), torch.Size, torch.dtype, torch.device, numpy arrays of numeric or bool dtype and numpy
scalars. Subclasses are refused (a tensor subclass whose comparison always succeeds stays on the
worker side), so what the grader compares is an ordinary tensor built from raw bytes.

A message is one frame: an 8-byte big-endian length, then a 4-byte length of the JSON tree, the
JSON tree, and the raw byte buffers the tree refers to by index.
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any, BinaryIO

import numpy as np
import torch

__all__ = ["MAX_FRAME_BYTES", "WireError", "decode", "encode", "read_frame", "write_frame"]

MAX_FRAME_BYTES = 1 << 30  # a single answer larger than 1 GiB is refused
_MAX_DEPTH = 64

_TORCH_DTYPES = {
    str(dtype).removeprefix("torch."): dtype
    for dtype in (
        torch.float16,
        torch.bfloat16,
        torch.float32,
        torch.float64,
        torch.complex64,
        torch.complex128,
        torch.uint8,
        torch.int8,
        torch.int16,
        torch.int32,
        torch.int64,
        torch.bool,
    )
}


class WireError(TypeError):
    """A value that cannot cross the boundary as plain data."""


def _describe(value: Any) -> str:
    kind = type(value)
    return (
        f"{kind.__module__}.{kind.__qualname__}"
        if kind.__module__ != "builtins"
        else kind.__qualname__
    )


def _tensor_bytes(tensor: torch.Tensor) -> bytes:
    flat = tensor.detach().contiguous().reshape(-1)
    if flat.numel() == 0:
        return b""
    return flat.view(torch.uint8).numpy().tobytes()


def encode(value: Any) -> tuple[Any, list[bytes]]:
    """JSON-able tree plus raw buffers for `value`; WireError naming the offending type."""
    buffers: list[bytes] = []

    def walk(item: Any, depth: int) -> Any:
        if depth > _MAX_DEPTH:
            raise WireError(f"value nested deeper than {_MAX_DEPTH} levels")
        kind = type(item)
        if item is None or kind is bool or kind is str:
            return item
        if kind is int:
            return {"int": str(item)}
        if kind is float:
            return {"float": repr(item)}
        if kind is complex:
            return {"complex": [repr(item.real), repr(item.imag)]}
        if kind is bytes:
            buffers.append(item)
            return {"bytes": len(buffers) - 1}
        if kind is list:
            return {"list": [walk(x, depth + 1) for x in item]}
        if kind is tuple:
            return {"tuple": [walk(x, depth + 1) for x in item]}
        if kind is torch.Size:
            return {"size": [int(x) for x in tuple.__iter__(item)]}
        if kind is dict:
            return {"dict": [[walk(k, depth + 1), walk(v, depth + 1)] for k, v in dict.items(item)]}
        if kind is torch.dtype:
            return {"torch_dtype": str(item).removeprefix("torch.")}
        if kind is torch.device:
            return {"device": str(item)}
        if kind is torch.Tensor or kind is torch.nn.Parameter:
            if item.layout != torch.strided:
                raise WireError(f"a {item.layout} tensor; return a dense tensor (`.to_dense()`)")
            if item.device.type != "cpu":
                raise WireError(f"a tensor on device {item.device}; the grader expects CPU tensors")
            dtype = str(item.dtype).removeprefix("torch.")
            if dtype not in _TORCH_DTYPES:
                raise WireError(f"a tensor of dtype {item.dtype}, which the grader does not accept")
            buffers.append(_tensor_bytes(item))
            return {
                "tensor": len(buffers) - 1,
                "dtype": dtype,
                "shape": list(item.shape),
                "requires_grad": bool(item.requires_grad),
            }
        if kind is np.ndarray:
            if item.dtype.kind not in "biufc" or item.dtype.hasobject:
                raise WireError(
                    f"a numpy array of dtype {item.dtype}; only numeric and bool arrays cross"
                )
            array = np.ascontiguousarray(item)
            buffers.append(array.tobytes())
            return {
                "ndarray": len(buffers) - 1,
                "dtype": array.dtype.str,
                "shape": list(array.shape),
            }
        if isinstance(item, np.generic) and kind.__module__ == "numpy":
            if item.dtype.kind not in "biufc":
                raise WireError(f"a numpy scalar of dtype {item.dtype}")
            return {"npscalar": np.asarray(item).tobytes().hex(), "dtype": item.dtype.str}
        raise WireError(
            f"a value of type {_describe(item)}; answers must be plain data "
            "(tensor, numpy array, number, str, bool, None, list, tuple, dict)"
        )

    return walk(value, 0), buffers


def decode(tree: Any, buffers: list[bytes]) -> Any:
    """Rebuild the value described by `tree` (the inverse of `encode`)."""
    if tree is None or isinstance(tree, (bool, str)):
        return tree
    if not isinstance(tree, dict) or len(tree) == 0:
        raise WireError(f"malformed message node {tree!r:.80}")
    if "int" in tree:
        return int(tree["int"])
    if "float" in tree:
        return float(tree["float"])
    if "complex" in tree:
        real, imag = tree["complex"]
        return complex(float(real), float(imag))
    if "bytes" in tree:
        return bytes(buffers[tree["bytes"]])
    if "list" in tree:
        return [decode(x, buffers) for x in tree["list"]]
    if "tuple" in tree:
        return tuple(decode(x, buffers) for x in tree["tuple"])
    if "size" in tree:
        return torch.Size([int(x) for x in tree["size"]])
    if "dict" in tree:
        return {decode(k, buffers): decode(v, buffers) for k, v in tree["dict"]}
    if "torch_dtype" in tree:
        return _TORCH_DTYPES[tree["torch_dtype"]]
    if "device" in tree:
        return torch.device(tree["device"])
    if "tensor" in tree:
        dtype = _TORCH_DTYPES[tree["dtype"]]
        shape = [int(x) for x in tree["shape"]]
        raw = buffers[tree["tensor"]]
        expected = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
        if len(raw) != expected:
            raise WireError(f"tensor buffer holds {len(raw)} bytes, expected {expected}")
        if expected == 0:
            tensor = torch.empty(shape, dtype=dtype)
        else:
            tensor = torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(dtype).reshape(shape)
        return (
            tensor.requires_grad_(True)
            if tree.get("requires_grad") and tensor.is_floating_point()
            else tensor
        )
    if "ndarray" in tree:
        dtype = np.dtype(tree["dtype"])
        if dtype.kind not in "biufc" or dtype.hasobject:
            raise WireError(f"refused numpy dtype {dtype}")
        return np.frombuffer(bytearray(buffers[tree["ndarray"]]), dtype=dtype).reshape(
            tree["shape"]
        )
    if "npscalar" in tree:
        dtype = np.dtype(tree["dtype"])
        if dtype.kind not in "biufc":
            raise WireError(f"refused numpy dtype {dtype}")
        return np.frombuffer(bytes.fromhex(tree["npscalar"]), dtype=dtype)[0]
    raise WireError(f"unknown message node {sorted(tree)!r:.80}")


def write_frame(stream: BinaryIO, message: Any) -> None:
    """Encode `message` and write it as one frame; WireError when it is not plain data."""
    tree, buffers = encode(message)
    tree_bytes = json.dumps({"tree": tree, "sizes": [len(b) for b in buffers]}).encode("utf-8")
    size = 4 + len(tree_bytes) + sum(len(b) for b in buffers)
    if size > MAX_FRAME_BYTES:
        raise WireError(f"an answer of {size} bytes; the limit is {MAX_FRAME_BYTES} bytes")
    stream.write(struct.pack(">Q", size) + struct.pack(">I", len(tree_bytes)) + tree_bytes)
    stream.writelines(buffers)
    stream.flush()


def _read_exactly(stream: BinaryIO, count: int) -> bytes:
    chunks, remaining = [], count
    while remaining:
        chunk = stream.read(remaining)
        if not chunk:
            raise EOFError(f"stream closed after {count - remaining} of {count} bytes")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def read_frame(stream: BinaryIO) -> Any:
    """Read one frame from `stream` and decode it; EOFError when the other side is gone."""
    (size,) = struct.unpack(">Q", _read_exactly(stream, 8))
    if size > MAX_FRAME_BYTES or size < 4:
        raise WireError(f"frame of {size} bytes refused")
    payload = _read_exactly(stream, size)
    (tree_size,) = struct.unpack(">I", payload[:4])
    header = json.loads(payload[4 : 4 + tree_size].decode("utf-8"))
    buffers, offset = [], 4 + tree_size
    for length in header["sizes"]:
        buffers.append(payload[offset : offset + length])
        offset += length
    return decode(header["tree"], buffers)
