"""Build the course notebooks from their plain-text twins and execute them in fast mode.

Each lesson is written as `notebooks/NN_name.py` (jupytext "py:percent"); this script
1. makes sure the first cell is the Colab set-up cell of `course_lib.colab`,
2. converts the script to `notebooks/NN_name.ipynb`,
3. executes it top to bottom with COURSE_MODE=fast (what CI validates with nbval) and stores the outputs,
4. prints the execution time of each notebook.

    python tools/build_notebooks.py                 # every notebook
    python tools/build_notebooks.py 03 05           # the notebooks whose names start with 03 / 05
    python tools/build_notebooks.py --check         # only check .py and .ipynb sources agree
    python tools/build_notebooks.py --time-only     # execute and time, write nothing
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import jupytext
import nbformat
from nbclient import NotebookClient

from course_lib.colab import SETUP_CELL_MARKER, setup_cell_source

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def with_setup_cell(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Put the canonical set-up cell first (replacing an older version of it)."""
    cells = [c for c in notebook.cells if not c.source.startswith(SETUP_CELL_MARKER)]
    notebook.cells = [nbformat.v4.new_code_cell(setup_cell_source())] + cells
    return notebook


def code_sources(notebook: nbformat.NotebookNode) -> list[str]:
    return [c.source.strip() for c in notebook.cells if c.cell_type == "code"]


def build(script: Path, timeout: int, write: bool = True) -> float:
    notebook = with_setup_cell(jupytext.read(script))
    if write:
        jupytext.write(notebook, script, fmt="py:percent")
    notebook = jupytext.read(script)
    notebook.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    notebook.metadata.pop("jupytext", None)
    os.environ["COURSE_MODE"] = "fast"
    os.environ["COURSE_TEXT_PROGRESS"] = "1"  # saved widgets keep no state: text bars show the end
    start = time.perf_counter()
    NotebookClient(
        notebook,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    ).execute()
    elapsed = time.perf_counter() - start
    if not write:
        return elapsed
    target = script.with_suffix(".ipynb")
    tmp = target.with_suffix(".ipynb.tmp")
    nbformat.write(notebook, tmp)
    tmp.replace(target)
    return elapsed


def out_of_sync(script: Path) -> str | None:
    """A message when `script` and its .ipynb disagree on code, else None."""
    target = script.with_suffix(".ipynb")
    if not target.exists():
        return f"{target.name} is missing: run python tools/build_notebooks.py {script.stem[:2]}"
    if code_sources(jupytext.read(script)) != code_sources(nbformat.read(target, as_version=4)):
        return f"{script.name} and {target.name} differ: run python tools/build_notebooks.py {script.stem[:2]}"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("prefixes", nargs="*", help="notebook name prefixes (default: all)")
    parser.add_argument("--check", action="store_true", help="only check the pairs are in sync")
    parser.add_argument("--time-only", action="store_true", help="execute and time, write nothing")
    parser.add_argument("--timeout", type=int, default=900, help="per-cell timeout in seconds")
    args = parser.parse_args(argv)
    scripts = sorted(
        p
        for p in NOTEBOOKS.glob("[0-9][0-9]_*.py")
        if not args.prefixes or any(p.name.startswith(x) for x in args.prefixes)
    )
    if not scripts:
        print("no notebook matched", file=sys.stderr)
        return 2
    problems = 0
    for script in scripts:
        if args.check:
            message = out_of_sync(script)
            print(message or f"{script.name}: in sync")
            problems += message is not None
        else:
            elapsed = build(script, args.timeout, write=not args.time_only)
            print(f"{script.name}: executed in {elapsed:.1f} s", flush=True)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
