"""Rehearse full mode on a CPU without the internet: every notebook's GPU path, top to bottom.

Full mode (real data sets, pretrained encoders, long schedules) is what a learner runs on Colab,
and it cannot run here: no GPU, no downloads. A rehearsal runs the same cells with

    COURSE_MODE=full COURSE_REHEARSAL=1 COURSE_DATA_DIR=<fixture trees>

- the real data-set classes read small trees in the archives' exact layouts
  (`course_lib.data.fixtures.write_rehearsal_data`);
- pretrained weights become random initialisation (`course_lib.utils.pretrained`, which says so);
- each notebook cuts only its numbers of steps and images (and batch sizes) under
  `if REHEARSAL:`; models and image sizes stay full mode's.
Nothing is written back into the notebooks.

    python tools/rehearse.py            # all notebooks, with the time of each
    python tools/rehearse.py 04 07      # the notebooks whose names start with 04 / 07
    python tools/rehearse.py 07 --slowest 5   # also the five slowest cells of each
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
import time
from pathlib import Path

import jupytext
from nbclient import NotebookClient

from course_lib.data.fixtures import write_rehearsal_data

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def rehearse(script: Path, data: Path, timeout: int = 900, slowest: int = 0) -> float:
    """Execute one notebook's full-mode path in rehearsal; returns the seconds it took. With
    `slowest`, also print that many of its slowest cells (seconds, first line)."""
    notebook = jupytext.read(script)
    notebook.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    environment = {"COURSE_MODE": "full", "COURSE_REHEARSAL": "1", "COURSE_DATA_DIR": str(data)}
    saved = {key: os.environ.get(key) for key in environment}
    os.environ.update(environment)  # the kernel inherits this process's environment
    try:
        start = time.perf_counter()
        NotebookClient(
            notebook,
            timeout=timeout,
            kernel_name="python3",
            resources={"metadata": {"path": str(NOTEBOOKS)}},
        ).execute()
        seconds = time.perf_counter() - start
        for cell_seconds, first_line in cell_times(notebook)[:slowest]:
            print(f"  {cell_seconds:6.1f} s  {first_line}")
        return seconds
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def cell_times(notebook) -> list[tuple[float, str]]:
    """(seconds, first source line) of every executed code cell, slowest first, from the
    timestamps nbclient records in each cell's metadata."""
    times = []
    for cell in notebook.cells:
        stamps = cell.get("metadata", {}).get("execution", {})
        if (
            cell.cell_type == "code"
            and "iopub.execute_input" in stamps
            and "shell.execute_reply" in stamps
        ):
            begin, end = (
                datetime.datetime.fromisoformat(stamps[key].replace("Z", "+00:00"))
                for key in ("iopub.execute_input", "shell.execute_reply")
            )
            first = next(
                (
                    line
                    for line in cell.source.splitlines()
                    if line.strip() and not line.startswith("# NBVAL")
                ),
                "",
            )
            times.append(((end - begin).total_seconds(), first[:80]))
    return sorted(times, reverse=True)


def notebooks(prefixes=()) -> list[Path]:
    return sorted(
        p
        for p in NOTEBOOKS.glob("[0-9][0-9]_*.py")
        if not prefixes or any(p.name.startswith(x) for x in prefixes)
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("prefixes", nargs="*", help="notebook name prefixes (default: all)")
    parser.add_argument(
        "--data", type=Path, help="folder for the fixture trees (default: a temporary folder)"
    )
    parser.add_argument(
        "--slowest",
        type=int,
        default=0,
        metavar="N",
        help="also print the N slowest cells of each notebook",
    )
    args = parser.parse_args(argv)
    scripts = notebooks(args.prefixes)
    if not scripts:
        print("no notebook matched", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="rehearsal_") as scratch:
        data = args.data or Path(scratch)
        write_rehearsal_data(data)
        total = 0.0
        for script in scripts:
            seconds = rehearse(script, data, slowest=args.slowest)
            total += seconds
            print(f"{script.name}: rehearsed in {seconds:.1f} s", flush=True)
    print(f"all: {total:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
