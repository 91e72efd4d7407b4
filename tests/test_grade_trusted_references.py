"""Expected values are computed in the grader's process; the worker only runs the learner's code.

- A hostile submission rewrites, in its worker, everything a probe looks up: the probe functions
  and their helpers become a function that answers {"got": x, "expected": x, ...}, the course's
  reference classes are swapped for the learner's, and torch's comparisons always agree. Graded by
  the real grader on the public and hidden tests of every exercise with probes, it scores zero;
  the same request shows the worker really does answer the forged reference.
- Answers are size-capped (the worker refuses, and the grader's side refuses from the frame's
  header when the worker's own check is switched off), and checked before a test unpacks them.
- The graded tests never read an expected value out of an answer, and unpack answers only through
  `fixtures.unpack` (checked on their source).
"""

from __future__ import annotations

import ast
import time
from pathlib import Path

import pytest
import torch

from course_grader.layout import CourseLayout
from course_grader.learner.client import MAX_ANSWER_BYTES, LearnerError
from course_grader.learner.fixtures import unpack
from course_grader.learner.limits import Limits
from course_grader.learner.runner import open_exercise
from course_grader.learner.session import run_tests
from course_grader.probes.ex03 import double_conv_case, unet_case
from course_grader.probes.ex04 import aspp_case

ROOT = Path(__file__).resolve().parent.parent
LAYOUT = CourseLayout(ROOT)
GRADED_SOURCES = sorted(
    [
        *(ROOT / "tests" / "graded").glob("test_*.py"),
        *(ROOT / "tests" / "hidden").glob("test_*.py"),
        *(ROOT / "tests" / "grading_cases" / "demo" / "tests").rglob("test_*.py"),
    ]
)
PROBES = sorted((ROOT / "course_lib" / "grade" / "probes").glob("*.py"))
LIMITS = Limits(
    call_timeout=30, exercise_timeout=120, startup_timeout=120, memory_mb=2048, file_mb=8
)

# Appended to a submission: every probe function and helper the worker loaded answers a forged
# reference, the reference classes become the learner's, and torch's comparisons always agree. The
# learner's constructors do the same to the namespace of whichever probe calls them (found through
# the caller's frame), so probes loaded from a file outside sys.modules are reached too. Against
# probes that computed "expected" in the worker, this earned the points of every probe test.
FORGE = """

import sys as _sys

import torch as _torch


def _forged(*args, **kwargs):
    same = _torch.zeros(2, 2)
    return {"got": same, "expected": same, "output": same, "parameters": 0,
            "got_parameters": 0, "expected_parameters": 0}


def _forge_namespace(namespace):
    for attr, value in list(namespace.items()):
        if attr.startswith("Reference") and attr[len("Reference"):] in globals():
            namespace[attr] = globals()[attr[len("Reference"):]]
        elif callable(value) and not isinstance(value, type) and not attr.startswith("__"):
            namespace[attr] = _forged


def _forge_callers():
    frame = _sys._getframe(1)
    while frame is not None:
        if frame.f_globals.get("__name__", "").startswith(("course_grader.probes", "_probes_")):
            _forge_namespace(frame.f_globals)
        frame = frame.f_back


for _name, _probes in list(_sys.modules.items()):
    if _name.startswith(("course_grader.probes", "_probes_")):
        _forge_namespace(vars(_probes))
_torch.testing.assert_close = lambda *args, **kwargs: None
_torch.equal = lambda *args, **kwargs: True
_torch.allclose = lambda *args, **kwargs: True
"""

# Modules that build and run, and compute nothing: zeros of a plausible shape.
JUNK_MODULES = {
    "ex03_unet": """
from torch import nn


class DoubleConv(nn.Module):
    def __init__(self, in_channels, out_channels, padding="same", batch_norm=True, **options):
        super().__init__()
        _forge_callers()
        self.conv = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x):
        return self.conv(x) * 0


class UNet(nn.Module):
    def __init__(self, in_channels=1, num_classes=2, base_channels=64, depth=4, padding="same",
                 batch_norm=True, **options):
        super().__init__()
        _forge_callers()
        self.head = nn.Conv2d(in_channels, num_classes, 1)

    def forward(self, x):
        return self.head(x) * 0
""",
    "ex04_deeplab": """
from torch import nn


class ASPP(nn.Module):
    def __init__(self, in_channels, out_channels=256, atrous_rates=(6, 12, 18), **options):
        super().__init__()
        _forge_callers()
        self.project = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x):
        return self.project(x) * 0
""",
    "ex05_losses_metrics": "",
    "ex07_training": """
def train_one_epoch(model, loader, loss_fn, optimizer, device="cpu"):
    _forge_callers()
    return 0.0
""",
}


def _hostile_submission(folder: Path) -> Path:
    for name, junk in JUNK_MODULES.items():
        stub = (LAYOUT.exercises / f"{name}.py").read_text(encoding="utf-8")
        (folder / f"{name}.py").write_text(stub + junk + FORGE, encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    return _hostile_submission(tmp_path_factory.mktemp("hostile"))


@pytest.fixture(scope="module")
def ex03(hostile):
    handle = open_exercise("ex03_unet", target=str(hostile), limits=LIMITS)
    yield handle
    handle.close()


def test_the_worker_answers_the_forged_reference(ex03):
    case = double_conv_case(3, 5, "same", True, 11, 9)
    raw = ex03.probe(case.probe, *case.args, case.weights, case.x)
    # what a test that trusted the worker's "expected" would have compared, and passed
    assert set(raw) >= {"got", "expected"} and torch.equal(raw["got"], raw["expected"])
    with pytest.raises(LearnerError, match="the probe double_conv_forward answered a dict"):
        case.run(ex03)


def test_a_forged_reference_class_changes_nothing_here(ex03):
    case = unet_case(1, 2, 4, 2, "same", True, 16, 16)
    assert float(case.expected.abs().sum()) > 0  # the course's U-Net, built in this process
    with pytest.raises(LearnerError, match="answered a dict with keys"):
        case.run(ex03)


def test_hostile_submission_scores_zero_with_the_real_grader(hostile):
    files = [path for name in JUNK_MODULES for path in LAYOUT.test_files(name, hidden=True)]
    result = run_tests(files, str(hostile), LAYOUT, limits=LIMITS)
    assert result.status == "ok", result.log[-2000:]
    by_exercise = {name: [t for t in result.tests if t.exercise == name] for name in JUNK_MODULES}
    assert all(by_exercise.values()), f"no tests collected for some exercise\n{result.log[-2000:]}"
    passed = [t.nodeid for t in result.tests if t.passed]
    assert passed == [], f"a forged reference earned points in {passed}"
    imported = [t for t in result.tests if "could not be imported" in t.message]
    assert imported == [], f"the hostile file must import for the attack to count: {imported[0]}"
    forged = [t.name for t in result.tests if "answered a dict with keys" in t.message]
    for test in (
        "test_double_conv_matches_course_lib",
        "test_unet_forward_matches_course_lib",
        "test_aspp_forward_matches_course_lib",
    ):
        assert any(name.startswith(test) for name in forged), (
            f"{test} should fail on the forged answer, not for another reason: "
            f"{[t.message for t in result.tests if t.name.startswith(test)]}"
        )


# ----------------------------------------------------------------------------- answers


LEARNER = f"""
import torch

from course_grader.learner import wire


def huge():
    return torch.zeros({MAX_ANSWER_BYTES // 4 * 5 // 4}, dtype=torch.float32)  # 1.25 x the limit


def huge_past_the_worker():
    wire.frame_size = lambda message: 0  # switch off the worker's own check
    return huge()


def pair():
    return torch.zeros(3, 4), 2


def not_a_pair():
    return torch.zeros(2_000_000, dtype=torch.bool)
"""


@pytest.fixture(scope="module")
def answers(tmp_path_factory):
    folder = tmp_path_factory.mktemp("answers")
    (folder / "ex97_answers.py").write_text(LEARNER)
    handle = open_exercise("ex97_answers", target=str(folder), limits=LIMITS)
    yield handle
    handle.close()


def test_an_answer_over_the_limit_is_refused_by_the_worker(answers):
    with pytest.raises(
        LearnerError,
        match=r"ex97.huge returned 20.0 MiB of data; answers are "
        r"limited to 16 MiB",
    ):
        answers.huge()
    assert answers.pair()[1] == 2  # the same worker goes on


def test_an_answer_over_the_limit_is_refused_by_the_grader_from_its_header(answers):
    with pytest.raises(
        LearnerError, match=r"refused: a message of 20.0 MiB; the limit is 16.0 MiB"
    ):
        answers.huge_past_the_worker()
    starts = answers.worker.starts
    labels, count = unpack(answers.pair(), "labels", "count")  # a fresh worker answers
    assert count == 2 and answers.worker.starts == starts + 1


def test_a_tensor_where_a_pair_was_expected_fails_before_unpacking(answers):
    answer = answers.not_a_pair()
    started = time.perf_counter()
    with pytest.raises(
        LearnerError,
        match=r"ex97.not_a_pair should return 2 values \(labels, "
        r"count\), got a Tensor of shape \(2000000,\)",
    ):
        labels, count = unpack(answer, "labels", "count")
    assert time.perf_counter() - started < 1.0  # no split into two million rows
    with pytest.raises(LearnerError, match="should return 3 values .*, got a tuple of 2 values"):
        unpack(answers.pair(), "a", "b", "c")


# ----------------------------------------------------------------------------- the tests' source


def _exercise_call(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "exercise"
    )


def test_graded_tests_unpack_answers_only_through_unpack():
    offenders = []
    for path in GRADED_SOURCES:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            unpacked = (
                (  # a, b = exercise.f(...); for x in exercise.f(...); [... in exercise.f(...)]
                    isinstance(node, ast.Assign)
                    and any(isinstance(t, (ast.Tuple, ast.List)) for t in node.targets)
                    and _exercise_call(node.value)
                )
                or (isinstance(node, (ast.For, ast.comprehension)) and _exercise_call(node.iter))
            )
            if unpacked:
                line = node.iter.lineno if isinstance(node, ast.comprehension) else node.lineno
                offenders.append(f"{path.relative_to(ROOT)}:{line}")
    assert offenders == [], (
        "unpack a learner's answer with course_grader.learner.fixtures.unpack(answer, 'name', ...) so "
        f"that its type and length are checked first: {offenders}"
    )


def test_no_graded_test_reads_an_expected_value_from_an_answer():
    offenders = []
    for path in GRADED_SOURCES:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Subscript)
                and isinstance(node.slice, ast.Constant)
                and str(node.slice.value).startswith("expected")
            ):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == [], f"expected values come from the test's own process: {offenders}"


def test_no_probe_answers_an_expected_value():
    offenders = []
    for path in PROBES:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Dict):
                keys = [k.value for k in node.keys if isinstance(k, ast.Constant)]
                offenders += [
                    f"{path.name}:{node.lineno} {k!r}"
                    for k in keys
                    if str(k).startswith("expected")
                ]
    assert offenders == [], (
        f"a probe runs in the worker and answers only the learner's output: {offenders}"
    )


@pytest.mark.parametrize(
    "case",
    [
        lambda: double_conv_case(3, 5, "valid", True, 11, 9),
        lambda: unet_case(2, 3, 4, 2, "valid", False, 44, 48),
        lambda: aspp_case(6, 5, [2, 6], 7, 7),
    ],
    ids=["double_conv", "unet", "aspp"],
)
def test_cases_are_reproducible_and_leave_the_global_rng_alone(case):
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    first, second = case(), case()
    assert torch.equal(torch.rand(3), before)  # the test's own random numbers are untouched
    assert torch.equal(first.expected, second.expected) and torch.equal(first.x, second.x)
    assert list(first.weights) == list(second.weights)
    assert all(torch.equal(first.weights[k], second.weights[k]) for k in first.weights)
