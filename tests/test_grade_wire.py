"""Plain data across the worker boundary: exact round trips, and refusal of everything else."""

from __future__ import annotations

import io
import json
import math
import struct

import numpy as np
import pytest
import torch

from course_grader.learner import wire


def _round_trip(value):
    stream = io.BytesIO()
    wire.write_frame(stream, value)
    stream.seek(0)
    return wire.read_frame(stream)


@pytest.mark.parametrize(
    "dtype",
    [
        torch.float16,
        torch.bfloat16,
        torch.float32,
        torch.float64,
        torch.complex64,
        torch.uint8,
        torch.int8,
        torch.int16,
        torch.int32,
        torch.int64,
        torch.bool,
    ],
)
def test_tensors_of_every_dtype_round_trip_bit_exactly(dtype):
    generator = torch.Generator().manual_seed(0)
    source = (torch.randn(3, 4, generator=generator) * 50).to(dtype)
    back = _round_trip(source)
    assert type(back) is torch.Tensor and back.dtype == dtype and back.shape == source.shape
    assert torch.equal(back.view(-1).view(torch.uint8), source.view(-1).view(torch.uint8))


def test_views_empty_and_grad_tensors():
    base = torch.arange(12.0).reshape(3, 4)
    torch.testing.assert_close(_round_trip(base.t()), base.t().contiguous())
    empty = _round_trip(torch.zeros(0, 5, dtype=torch.int64))
    assert empty.shape == (0, 5) and empty.dtype == torch.int64
    leaf = torch.ones(2, requires_grad=True)
    assert _round_trip(leaf).requires_grad


def test_nested_python_numpy_and_torch_values():
    value = {
        "a": [1, 2.5, None, True, "s", b"raw"],
        3: (torch.Size([2, 3]), torch.float32, torch.device("cpu")),
        (1, 2): {"nan": math.nan, "inf": -math.inf, "big": 2**80, "z": 1 + 2j},
        "np": np.arange(6, dtype=np.int16).reshape(2, 3),
        "scalar": np.float32(1.5),
    }
    back = _round_trip(value)
    assert back["a"] == [1, 2.5, None, True, "s", b"raw"] and type(back["a"][0]) is int
    assert (
        back[3] == (torch.Size([2, 3]), torch.float32, torch.device("cpu"))
        and type(back[3]) is tuple
    )
    assert math.isnan(back[(1, 2)]["nan"]) and back[(1, 2)]["inf"] == -math.inf
    assert back[(1, 2)]["big"] == 2**80 and back[(1, 2)]["z"] == 1 + 2j
    np.testing.assert_array_equal(back["np"], value["np"])
    assert (
        back["np"].dtype == np.int16
        and back["scalar"].dtype == np.float32
        and back["scalar"] == 1.5
    )


class _AlwaysEqual(torch.Tensor):
    def __eq__(self, other):
        return True


class _IntThatAgrees(int):
    def __eq__(self, other):
        return True


@pytest.mark.parametrize(
    "value, complaint",
    [
        (object(), "type object"),
        (torch.zeros(2).as_subclass(_AlwaysEqual), "_AlwaysEqual"),
        (_IntThatAgrees(3), "_IntThatAgrees"),
        ([1, {2: lambda: 0}], "function"),
        (np.array(["a"], dtype=object), "dtype object"),
        (torch.zeros(2, 2).to_sparse(), "sparse"),
        (torch.zeros(2, device="meta"), "device meta"),
    ],
)
def test_non_plain_values_are_refused(value, complaint):
    with pytest.raises(wire.WireError, match=complaint):
        wire.encode(value)


def test_malformed_frames_are_refused():
    with pytest.raises(wire.WireError):
        wire.decode({"tensor": 0, "dtype": "float32", "shape": [4]}, [b"\0" * 3])
    with pytest.raises(wire.WireError):
        wire.decode({"pickle": "cos\nsystem\n"}, [])
    with pytest.raises(EOFError):
        wire.read_frame(io.BytesIO(b"\0\0\0"))


class _CountingStream(io.BytesIO):
    """A stream that counts the bytes read from it."""

    def __init__(self, data: bytes):
        super().__init__(data)
        self.consumed = 0

    def read(self, size=-1):
        chunk = super().read(size)
        self.consumed += len(chunk)
        return chunk


def _frame(value) -> bytes:
    stream = io.BytesIO()
    wire.write_frame(stream, value)
    return stream.getvalue()


def test_a_frame_over_the_limit_is_refused_from_its_header_alone():
    raw = _frame(torch.zeros(1000))  # 4000 bytes of tensor
    stream = _CountingStream(raw)
    with pytest.raises(wire.FrameTooLarge, match="the limit is 1000 bytes") as refused:
        wire.read_frame(stream, max_bytes=1000)
    assert stream.consumed == 8 and refused.value.size > 4000
    # a header announcing 1 TiB is refused before anything is allocated
    with pytest.raises(wire.FrameTooLarge):
        wire.read_frame(_CountingStream(struct.pack(">Q", 1 << 40)), max_bytes=1 << 20)
    assert torch.equal(wire.read_frame(io.BytesIO(raw), max_bytes=len(raw)), torch.zeros(1000))


def test_a_structure_over_its_limit_is_refused_before_parsing():
    raw = _frame(list(range(3000)))  # about 40 kB of JSON tree, no buffer
    stream = _CountingStream(raw)
    with pytest.raises(wire.FrameTooLarge, match="message structure"):
        wire.read_frame(stream, max_tree_bytes=10_000)
    assert stream.consumed == 12
    assert wire.read_frame(io.BytesIO(raw)) == list(range(3000))


def _forged_frame(header: dict, buffers: list[bytes]) -> bytes:
    tree = json.dumps(header).encode()
    body = struct.pack(">I", len(tree)) + tree + b"".join(buffers)
    return struct.pack(">Q", len(body)) + body


@pytest.mark.parametrize(
    "header, buffers, complaint",
    [
        (
            {"tree": {"tensor": 0, "dtype": "float32", "shape": [2]}, "sizes": [8]},
            [b"\0" * 4],
            "parts add up to",
        ),
        (
            {"tree": {"tensor": 0, "dtype": "float32", "shape": [-1, -2]}, "sizes": [8]},
            [b"\0" * 8],
            "malformed shape",
        ),
        (
            {"tree": {"tensor": 3, "dtype": "float32", "shape": [2]}, "sizes": [8]},
            [b"\0" * 8],
            "buffer 3 of 1",
        ),
        (
            {"tree": {"ndarray": 0, "dtype": "<f4", "shape": [3]}, "sizes": [8]},
            [b"\0" * 8],
            "array buffer holds 8 bytes",
        ),
        ({"tree": {"list": [{"list": []}]}, "sizes": "8"}, [], "malformed frame header"),
    ],
)
def test_forged_frames_are_refused_with_a_reason(header, buffers, complaint):
    with pytest.raises(wire.WireError, match=complaint):
        wire.read_frame(io.BytesIO(_forged_frame(header, buffers)))


def test_deeply_nested_messages_are_refused():
    tree: dict = {"list": []}
    for _ in range(200):
        tree = {"list": [tree]}
    with pytest.raises(wire.WireError, match="nested deeper"):
        wire.decode(tree, [])
