"""Take a student's submission in: only the whitelisted exercise files, everything else reported.

A submission is a folder or a `.zip` (any case: `bob.ZIP` too). From it the grader keeps regular,
reasonably small files named like an exercise of the course (`exNN_<topic>.py`) that Python can
read: UTF-8, with or without a BOM, or another encoding declared by a PEP 263 coding line.
`conftest.py`, `pytest.ini`, `sitecustomize.py`, symlinks, other names, oversized or undecodable
files are ignored and listed in the report. When a name occurs more than once, folders and zips
follow the same rule: the shallowest copy wins, then the first in path order. Zip members are read
in memory (never extracted by name), so `../` paths, absolute paths and links cannot place a file
anywhere; total size and member count are bounded too.
"""

from __future__ import annotations

import hashlib
import importlib.util
import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from course_lib.atomic import write_bytes_atomic

__all__ = ["MAX_FILE_BYTES", "MAX_ZIP_BYTES", "MAX_ZIP_MEMBERS", "Intake", "take_in"]

MAX_FILE_BYTES = 512 * 1024
MAX_ZIP_BYTES = 50 * 2**20
MAX_ZIP_MEMBERS = 2000


@dataclass
class Intake:
    """What was taken from one submission: accepted files (name -> bytes) and what was ignored."""

    student: str
    files: dict[str, bytes] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)
    origins: dict[str, str] = field(default_factory=dict)  # name -> where it was found

    def sha256(self) -> str:
        """Hash of the accepted files (names and contents), for the gradebook's audit column."""
        digest = hashlib.sha256()
        for name in sorted(self.files):
            digest.update(name.encode() + b"\0" + hashlib.sha256(self.files[name]).digest())
        return digest.hexdigest()

    def write(self, folder: Path) -> None:
        """Write the accepted files into `folder` (the copy that is graded)."""
        for name, data in self.files.items():
            write_bytes_atomic(folder / name, data)


def _consider(
    intake: Intake, shown: str, name: str, data: bytes | None, size: int, known: set[str]
) -> None:
    if name not in known:
        intake.ignored.append(
            f"{shown}: not an exercise file of this course (expected one of {sorted(known)})"
        )
    elif size > MAX_FILE_BYTES:
        intake.ignored.append(f"{shown}: {size} bytes, over the {MAX_FILE_BYTES}-byte limit")
    elif data is None:
        intake.ignored.append(f"{shown}: not a regular file")
    elif name in intake.files:
        intake.ignored.append(
            f"{shown}: a second copy of {name}; {intake.origins[name]} is graded "
            "(the shallowest copy wins)"
        )
    else:
        try:  # what `python file.py` reads: UTF-8 (BOM or not), or a PEP 263 coding line
            importlib.util.decode_source(data)
        except (UnicodeDecodeError, SyntaxError, LookupError):
            intake.ignored.append(
                f"{shown}: not UTF-8 text (save it as UTF-8, or declare its encoding on line 1 "
                "or 2, PEP 263)"
            )
            return
        intake.files[name] = data
        intake.origins[name] = shown


def _copy_order(parts: tuple[str, ...]) -> tuple[int, str]:
    """Which copy of a name wins, in a folder and in a zip alike: the shallowest, then path order."""
    return len(parts), "/".join(parts)


def _from_folder(intake: Intake, folder: Path, known: set[str]) -> None:
    entries = sorted(folder.rglob("*"), key=lambda p: _copy_order(p.relative_to(folder).parts))
    for path in entries[:MAX_ZIP_MEMBERS]:
        shown = str(path.relative_to(folder))
        mode = path.lstat().st_mode
        if stat.S_ISDIR(mode):
            continue
        if stat.S_ISLNK(mode):
            intake.ignored.append(f"{shown}: a symbolic link")
            continue
        if not stat.S_ISREG(mode):
            intake.ignored.append(f"{shown}: not a regular file")
            continue
        size = path.lstat().st_size
        data = path.read_bytes() if size <= MAX_FILE_BYTES and path.name in known else None
        _consider(intake, shown, path.name, data, size, known)
    if len(entries) > MAX_ZIP_MEMBERS:
        intake.ignored.append(f"{len(entries) - MAX_ZIP_MEMBERS} more entries not examined")


def _from_zip(intake: Intake, archive: Path, known: set[str]) -> None:
    try:
        with zipfile.ZipFile(archive) as bundle:
            members = sorted(
                bundle.infolist(),
                key=lambda m: _copy_order(PurePosixPath(m.filename.replace("\\", "/")).parts),
            )
            if len(members) > MAX_ZIP_MEMBERS:
                intake.ignored.append(
                    f"{archive.name}: {len(members)} members, over the {MAX_ZIP_MEMBERS} limit"
                )
                members = members[:MAX_ZIP_MEMBERS]
            total = 0
            for member in members:
                shown = member.filename
                parts = PurePosixPath(shown.replace("\\", "/")).parts
                if member.is_dir():
                    continue
                if shown.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
                    intake.ignored.append(f"{shown}: unsafe path in the zip")
                    continue
                if stat.S_ISLNK(member.external_attr >> 16):
                    intake.ignored.append(f"{shown}: a symbolic link")
                    continue
                total += member.file_size
                if total > MAX_ZIP_BYTES:
                    intake.ignored.append(
                        f"{shown}: the zip unpacks to more than {MAX_ZIP_BYTES} bytes; rest ignored"
                    )
                    break
                name = parts[-1] if parts else shown
                data = None
                if name in known and member.file_size <= MAX_FILE_BYTES:
                    with bundle.open(member) as stream:
                        data = stream.read(MAX_FILE_BYTES + 1)
                    if len(data) > MAX_FILE_BYTES:
                        intake.ignored.append(f"{shown}: larger than its zip entry claims")
                        continue
                _consider(intake, shown, name, data, member.file_size, known)
    except (zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError) as error:
        intake.ignored.append(f"{archive.name}: not a readable zip ({error})")


def take_in(submission: Path, exercise_names: list[str]) -> Intake:
    """Accepted exercise files and ignored entries of one submission (a folder or a .zip)."""
    known = {f"{name}.py" for name in exercise_names}
    is_zip = submission.suffix.lower() == ".zip"
    student = submission.name[: -len(".zip")] if is_zip else submission.name
    intake = Intake(student=student)
    if submission.is_symlink():
        intake.ignored.append(f"{submission.name}: a symbolic link")
    elif submission.is_dir():
        _from_folder(intake, submission, known)
    elif is_zip and submission.is_file():
        _from_zip(intake, submission, known)
    else:
        intake.ignored.append(f"{submission.name}: neither a folder nor a .zip")
    return intake
