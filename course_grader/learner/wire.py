"""Plain data across the process boundary between the grader and the worker that runs learner code.

Only these types cross, and they are rebuilt from scratch on the other side (never unpickled):
None, bool, int, float, complex, str, bytes, list, tuple, dict, torch.Tensor (CPU, dense,
strided), torch.Size, torch.dtype, torch.device, numpy arrays of numeric or bool dtype and numpy
scalars. Subclasses are refused (a tensor subclass whose comparison always succeeds stays on the
worker side), so what the grader compares is an ordinary tensor built from raw bytes.

A message is one frame: an 8-byte big-endian length, then a 4-byte length of the JSON tree, the
JSON tree, and the raw byte buffers the tree refers to by index. `read_frame` takes a size limit and
checks the lengths in the header against it before reading or decoding anything else, so the
grader's side of an answer costs at most a few times that limit in memory.
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any, BinaryIO

import numpy as np
import torch

__all__ = [
    "MAX_FRAME_BYTES",
    "MAX_TREE_BYTES",
    "FrameTooLarge",
    "WireError",
    "decode",
    "encode",
    "frame_size",
    "read_frame",
    "write_frame",
]

MAX_FRAME_BYTES = 1 << 30  # a single message larger than 1 GiB is refused
MAX_TREE_BYTES = 1 << 20  # the JSON tree (structure and scalars) of one message: 1 MiB
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


def _buffer(buffers: list[bytes], index: Any) -> bytes:
    if type(index) is not int or not 0 <= index < len(buffers):
        raise WireError(f"message refers to buffer {index!r:.20} of {len(buffers)}")
    return buffers[index]


def _shape(node: Any) -> list[int]:
    shape = node.get("shape")
    if not isinstance(shape, list) or not all(type(x) is int and x >= 0 for x in shape):
        raise WireError(f"malformed shape {shape!r:.80}")
    return shape


def decode(tree: Any, buffers: list[bytes], depth: int = 0) -> Any:
    """Rebuild the value described by `tree` (the inverse of `encode`)."""
    if tree is None or isinstance(tree, (bool, str)):
        return tree
    if not isinstance(tree, dict) or len(tree) == 0:
        raise WireError(f"malformed message node {tree!r:.80}")
    if depth > _MAX_DEPTH:
        raise WireError(f"message nested deeper than {_MAX_DEPTH} levels")
    depth += 1
    if "int" in tree:
        return int(tree["int"])
    if "float" in tree:
        return float(tree["float"])
    if "complex" in tree:
        real, imag = tree["complex"]
        return complex(float(real), float(imag))
    if "bytes" in tree:
        return bytes(_buffer(buffers, tree["bytes"]))
    if "list" in tree:
        return [decode(x, buffers, depth) for x in tree["list"]]
    if "tuple" in tree:
        return tuple(decode(x, buffers, depth) for x in tree["tuple"])
    if "size" in tree:
        return torch.Size([int(x) for x in tree["size"]])
    if "dict" in tree:
        return {decode(k, buffers, depth): decode(v, buffers, depth) for k, v in tree["dict"]}
    if "torch_dtype" in tree:
        return _TORCH_DTYPES[tree["torch_dtype"]]
    if "device" in tree:
        return torch.device(tree["device"])
    if "tensor" in tree:
        dtype = _TORCH_DTYPES[tree["dtype"]]
        shape = _shape(tree)
        raw = _buffer(buffers, tree["tensor"])
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
        shape, raw = _shape(tree), _buffer(buffers, tree["ndarray"])
        if len(raw) != math.prod(shape) * dtype.itemsize:
            raise WireError(f"array buffer holds {len(raw)} bytes, expected shape {shape}")
        return np.frombuffer(bytearray(raw), dtype=dtype).reshape(shape)
    if "npscalar" in tree:
        dtype = np.dtype(tree["dtype"])
        if dtype.kind not in "biufc":
            raise WireError(f"refused numpy dtype {dtype}")
        return np.frombuffer(bytes.fromhex(tree["npscalar"]), dtype=dtype)[0]
    raise WireError(f"unknown message node {sorted(tree)!r:.80}")


def _tree_bytes(tree: Any, buffers: list[bytes]) -> bytes:
    return json.dumps({"tree": tree, "sizes": [len(b) for b in buffers]}).encode("utf-8")


def frame_size(message: Any) -> int:
    """Bytes `message` takes as a frame (after the 8-byte length); WireError when not plain data."""
    tree, buffers = encode(message)
    return 4 + len(_tree_bytes(tree, buffers)) + sum(len(b) for b in buffers)


def write_frame(stream: BinaryIO, message: Any) -> None:
    """Encode `message` and write it as one frame; WireError when it is not plain data."""
    tree, buffers = encode(message)
    tree_bytes = _tree_bytes(tree, buffers)
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


class FrameTooLarge(WireError):
    """A frame whose header announces more bytes than the reader accepts (nothing else was read)."""

    def __init__(self, size: int, limit: int, part: str = "message"):
        super().__init__(f"a {part} of {_mib(size)}; the limit is {_mib(limit)}")
        self.size, self.limit = size, limit


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{size} bytes"


def read_frame(
    stream: BinaryIO, max_bytes: int = MAX_FRAME_BYTES, max_tree_bytes: int = MAX_TREE_BYTES
) -> Any:
    """Read one frame from `stream` and decode it; EOFError when the other side is gone.

    The frame's length is checked against `max_bytes` and its tree's length against
    `max_tree_bytes` before the rest is read (FrameTooLarge); the buffer sizes the tree lists must
    add up to the frame, and every tensor's and array's shape must match its buffer (WireError).
    """
    (size,) = struct.unpack(">Q", _read_exactly(stream, 8))
    if size > min(max_bytes, MAX_FRAME_BYTES):
        raise FrameTooLarge(size, min(max_bytes, MAX_FRAME_BYTES))
    if size < 4:
        raise WireError(f"frame of {size} bytes refused")
    (tree_size,) = struct.unpack(">I", _read_exactly(stream, 4))
    if tree_size > min(max_tree_bytes, size - 4):
        raise FrameTooLarge(tree_size, min(max_tree_bytes, size - 4), part="message structure")
    header = json.loads(_read_exactly(stream, tree_size).decode("utf-8"))
    sizes = header.get("sizes") if isinstance(header, dict) else None
    if not isinstance(sizes, list) or not all(type(n) is int and n >= 0 for n in sizes):
        raise WireError("malformed frame header")
    if 4 + tree_size + sum(sizes) != size:
        raise WireError(f"frame of {size} bytes whose parts add up to {4 + tree_size + sum(sizes)}")
    buffers = [_read_exactly(stream, length) for length in sizes]
    return decode(header["tree"], buffers)
