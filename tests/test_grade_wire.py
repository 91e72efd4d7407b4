"""Plain data across the worker boundary: exact round trips, and refusal of everything else."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch

from course_lib.grade import wire


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
