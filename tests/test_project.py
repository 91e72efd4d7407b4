"""Consistency of the project files: dependency lists, README, notebooks and their set-up cell."""

import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import tomllib

from course_lib.colab import SETUP_CELL_MARKER, setup_cell_source
from course_lib.course import LESSONS, course_map_markdown

ROOT = Path(__file__).resolve().parents[1]
CONDA_TO_PIP = {"pytorch": "torch"}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _pyproject_packages() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + project["optional-dependencies"]["dev"]
    return {_name(r): r.replace(" ", "") for r in requirements}


def _conda_packages() -> dict[str, str]:
    packages = {}
    text = (ROOT / "environment.yml").read_text()
    for line in text.split("dependencies:", 1)[1].splitlines():
        match = re.match(r"^  - ([A-Za-z0-9_.\-]+)(.*)$", line)
        if match and match.group(1) not in ("python", "pip"):
            name = CONDA_TO_PIP.get(match.group(1), match.group(1)).lower()
            packages[name] = name + match.group(2).replace(" ", "")
    return packages


def test_environment_yml_lists_the_same_packages_as_pyproject():
    pip, conda = _pyproject_packages(), _conda_packages()
    assert sorted(conda) == sorted(pip), (
        f"only in pyproject: {sorted(set(pip) - set(conda))}; "
        f"only in environment.yml: {sorted(set(conda) - set(pip))}"
    )
    for name in pip:
        assert conda[name] == pip[name].lower(), (
            f"{name}: version ranges differ ({conda[name]} vs {pip[name]})"
        )


def test_torch_is_declared_as_a_range_that_admits_the_ci_wheels():
    torch_req = _pyproject_packages()["torch"]
    assert ">=" in torch_req and "==" not in torch_req
    from packaging.specifiers import SpecifierSet

    assert "2.14.1" in SpecifierSet(torch_req.removeprefix("torch"))
    assert "0.29.1" in SpecifierSet(
        _pyproject_packages()["torchvision"].removeprefix("torchvision")
    )


def test_readme_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"^(python -m pytest .*)$", readme, flags=re.M)
    assert commands, "the README must show the test command on a line of its own"
    assert commands[0] in (ROOT / ".ci" / "run").read_text()


def test_readme_command_lines_read_the_checkpoint_that_train_writes():
    from course_lib.cli import CHECKPOINT_FILE

    readme = (ROOT / "README.md").read_text()
    outs = re.findall(r"python -m course_lib train .*--out (\S+)", readme)
    checkpoints = re.findall(r"--checkpoint (\S+)", readme)
    assert outs and checkpoints, "the README shows train, evaluate and predict"
    expected = {f"{out.rstrip('/')}/{CHECKPOINT_FILE}" for out in outs}
    for checkpoint in checkpoints:
        assert checkpoint in expected, (
            f"README reads {checkpoint}; train writes one of {sorted(expected)}"
        )


def test_readme_embeds_the_course_map():
    assert course_map_markdown() in (ROOT / "README.md").read_text(), (
        "README course map is stale: paste course_lib.course.course_map_markdown() into it"
    )


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda lesson: lesson.notebook)
def test_every_lesson_has_its_notebook_and_exercise(lesson):
    notebook = ROOT / "notebooks" / f"{lesson.notebook}.ipynb"
    assert notebook.is_file(), f"missing {notebook.relative_to(ROOT)}"
    assert (ROOT / "notebooks" / f"{lesson.notebook}.py").is_file()
    if lesson.exercise:
        for folder in ("solutions", "exercises"):
            assert (ROOT / folder / f"{lesson.exercise}.py").is_file(), (
                f"missing {folder}/{lesson.exercise}.py"
            )


@pytest.mark.parametrize(
    "notebook", sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")), ids=lambda p: p.stem
)
def test_notebook_starts_with_the_setup_cell_and_matches_its_twin(notebook):
    import jupytext

    cells = nbformat.read(notebook, as_version=4).cells
    assert cells[0].cell_type == "code" and cells[0].source == setup_cell_source(), (
        f"{notebook.name}: first cell must be the set-up cell; run python tools/build_notebooks.py {notebook.stem[:2]}"
    )
    assert sum(c.source.startswith(SETUP_CELL_MARKER) for c in cells) == 1
    twin = jupytext.read(notebook.with_suffix(".py"))
    code = [c.source.strip() for c in cells if c.cell_type == "code"]
    assert code == [c.source.strip() for c in twin.cells if c.cell_type == "code"], (
        f"{notebook.name} and its .py twin differ; run python tools/build_notebooks.py {notebook.stem[:2]}"
    )
    executed = [c for c in cells if c.cell_type == "code" and c.source.strip()]
    assert all(c.execution_count is not None for c in executed), (
        f"{notebook.name} has unexecuted cells"
    )


@pytest.mark.parametrize(
    "command", [["check", "--output-format", "concise"], ["format", "--check"]]
)
def test_the_tree_follows_the_projects_ruff_rules_and_format(command):
    """`ruff check .` and `ruff format --check .` with the rules of pyproject.toml ([tool.ruff]:
    pyflakes, pycodestyle, import order, bugbear, pyupgrade; what each folder may skip is listed
    there with its reason). The same checks run before a commit with .pre-commit-config.yaml."""
    done = subprocess.run(
        [sys.executable, "-m", "ruff", *command, "--no-cache", "."],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]


def test_pre_commit_runs_the_pinned_ruff():
    pinned = re.search(r'"ruff==([\d.]+)"', (ROOT / "pyproject.toml").read_text()).group(1)
    config = (ROOT / ".pre-commit-config.yaml").read_text()
    assert (
        f"rev: v{pinned}" in config and "id: ruff-check" in config and "id: ruff-format" in config
    )
