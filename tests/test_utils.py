"""Tests for course_lib.utils: device choice, seeding, course mode, parameter counting, report."""

import random

import numpy as np
import pytest
import torch
from torch import nn

from course_lib import utils


def test_get_device_falls_back_to_cpu_without_accelerators(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(utils, "_mps_available", lambda: False)
    assert utils.get_device() == torch.device("cpu")


def test_get_device_prefers_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert utils.get_device() == torch.device("cuda")


def test_get_device_refuses_an_unavailable_preference(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="cuda"):
        utils.get_device("cuda")
    with pytest.raises(ValueError, match="prefer"):
        utils.get_device("tpu")


def test_seed_everything_repeats_all_generators():
    utils.seed_everything(123)
    first = (random.random(), np.random.rand(), torch.rand(3))
    utils.seed_everything(123)
    second = (random.random(), np.random.rand(), torch.rand(3))
    assert first[0] == second[0] and first[1] == second[1]
    torch.testing.assert_close(first[2], second[2])


@pytest.mark.parametrize("bad", [-1, 1.5, "1", True])
def test_seed_everything_rejects_bad_seeds(bad):
    with pytest.raises(ValueError, match="seed"):
        utils.seed_everything(bad)


def test_course_mode_reads_the_environment(monkeypatch):
    monkeypatch.setenv("COURSE_MODE", "Full")
    assert utils.course_mode() == "full"
    monkeypatch.setenv("COURSE_MODE", "fast")
    assert utils.course_mode() == "fast"
    monkeypatch.setenv("COURSE_MODE", "turbo")
    with pytest.raises(ValueError, match="COURSE_MODE"):
        utils.course_mode()


def test_course_mode_defaults_on_cuda_availability(monkeypatch):
    monkeypatch.delenv("COURSE_MODE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert utils.course_mode() == "full"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert utils.course_mode() == "fast"


def test_data_dir_honours_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path))
    assert utils.data_dir() == tmp_path
    monkeypatch.delenv("COURSE_DATA_DIR")
    assert utils.data_dir().parts[-2:] == (".cache", "course_lib")


def test_count_parameters_matches_the_formula():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Conv2d(8, 2, 1, bias=False))
    # conv: 8*3*3*3 + 8, BN: 8 + 8, 1x1 conv: 2*8
    assert utils.count_parameters(model) == 8 * 27 + 8 + 16 + 16
    model[0].weight.requires_grad_(False)
    assert utils.count_parameters(model, trainable_only=True) == 8 + 16 + 16
    with pytest.raises(TypeError, match="nn.Module"):
        utils.count_parameters([1, 2])


def test_environment_report_names_versions_and_mode(monkeypatch):
    monkeypatch.setenv("COURSE_MODE", "fast")
    report = utils.environment_report()
    assert report["torch"] == torch.__version__
    assert report["course mode"] == "fast"
    assert all(isinstance(v, str) for v in report.values())


def test_median_seconds_skips_warmup_and_takes_the_median(monkeypatch):
    clock = iter([0.0, 5.0, 10.0, 11.0, 20.0, 23.0])  # timed calls last 5, 1 and 3 s
    monkeypatch.setattr(utils.time, "perf_counter", lambda: next(clock))
    calls = []
    assert utils.median_seconds(lambda: calls.append(1), repeats=3, warmup=2) == 3.0
    assert len(calls) == 5, "two untimed warm-up calls, then three timed ones"
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        utils.median_seconds(lambda: None, repeats=0)


def test_progress_bar_is_text_on_stdout_when_a_notebook_is_executed_to_be_saved(
    monkeypatch, capsys
):
    from tqdm.auto import tqdm as auto_tqdm
    from tqdm.std import tqdm as text_tqdm

    from course_lib.utils import progress_bar

    monkeypatch.setenv("COURSE_TEXT_PROGRESS", "1")
    with progress_bar(total=3, desc="epochs") as bar:
        for _ in range(3):
            bar.update()
    assert type(bar) is text_tqdm
    out, err = capsys.readouterr()
    assert "epochs: 100%" in out and "3/3" in out and err == ""
    with progress_bar(total=2, desc="batches", leave=False) as inner:  # transient: left out
        inner.update(2)
    assert capsys.readouterr().out == ""
    monkeypatch.delenv("COURSE_TEXT_PROGRESS")
    with progress_bar(total=1, disable=True) as bar:
        pass
    assert type(bar) is auto_tqdm


@pytest.mark.parametrize(
    "differences, verdict",
    [
        ([0.2, 0.01, 0.3], "higher on every seed"),
        (np.array([-0.1, -0.2]), "lower on every seed"),
        ([0.2, -0.01, 0.3], "within seed spread: not the same sign on every seed"),
        ([0.2, 0.0, 0.3], "within seed spread: not the same sign on every seed"),  # a tie
    ],
)
def test_seed_verdict_claims_a_direction_only_when_every_seed_agrees(differences, verdict):
    assert utils.seed_verdict(differences) == verdict


@pytest.mark.parametrize("bad", [[], [[0.1, 0.2]], [0.1, float("nan")]])
def test_seed_verdict_refuses_what_is_not_one_difference_per_seed(bad):
    with pytest.raises(ValueError, match="1-D array of finite differences"):
        utils.seed_verdict(bad)
