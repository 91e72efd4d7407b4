"""Tests for course_lib.data.split: deterministic, disjoint, covering splits."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from course_lib.data.split import train_val_indices, train_val_split


@settings(max_examples=60, deadline=None)
@given(length=st.integers(2, 500), fraction=st.floats(0.01, 0.99), seed=st.integers(0, 2**31))
def test_split_is_disjoint_covering_and_sized(length, fraction, seed):
    train, val = train_val_indices(length, fraction, seed)
    assert set(train).isdisjoint(val)
    assert sorted(train + val) == list(range(length))
    assert len(val) == min(max(round(length * fraction), 1), length - 1)
    assert train == sorted(train) and val == sorted(val)


def test_same_seed_same_split_other_seed_other_split():
    assert train_val_indices(100, 0.2, seed=7) == train_val_indices(100, 0.2, seed=7)
    assert train_val_indices(100, 0.2, seed=7) != train_val_indices(100, 0.2, seed=8)


def test_split_is_shuffled_not_a_prefix():
    train, val = train_val_indices(100, 0.3, seed=0)
    assert val != list(range(70, 100)) and val != list(range(30))


def test_known_split_is_stable_across_machines():
    # torch.randperm with a seeded CPU generator is the documented, platform-independent source.
    import torch

    order = torch.randperm(10, generator=torch.Generator().manual_seed(3)).tolist()
    assert train_val_indices(10, 0.3, seed=3) == (sorted(order[3:]), sorted(order[:3]))


def test_train_val_split_uses_val_dataset_for_validation():
    train_data = [("train", i) for i in range(20)]
    val_data = [("val", i) for i in range(20)]
    train, val = train_val_split(train_data, 0.25, seed=1, val_dataset=val_data)
    assert all(train[i][0] == "train" for i in range(len(train)))
    assert all(val[i][0] == "val" for i in range(len(val)))
    assert sorted([s[1] for s in train] + [s[1] for s in val]) == list(range(20))
    assert len(val) == 5


@pytest.mark.parametrize(
    "args, match",
    [
        ((1, 0.2), "length"),
        ((10, 0.0), "val_fraction"),
        ((10, 1.0), "val_fraction"),
        ((10, 0.2, -1), "seed"),
        ((10.0, 0.2), "length"),
    ],
)
def test_bad_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        train_val_indices(*args)


def test_val_dataset_of_other_length_is_rejected():
    with pytest.raises(ValueError, match="same samples"):
        train_val_split(list(range(10)), val_dataset=list(range(9)))
