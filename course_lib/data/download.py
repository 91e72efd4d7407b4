"""Downloads that survive the real internet: mirrors, resume, checksums and safe extraction.

A data set names each of its archives as a `RemoteFile`: the mirrors that serve it, tried in
order, its checksum when a trustworthy one is known, and its size when documented.

- `download_file` writes the bytes to `NAME.part`. An interrupted transfer continues from there
  with an HTTP `Range` request (a server that ignores it answers 200 and the file starts over).
  The file appears under its own name (an atomic rename) only once its size and checksum matched;
  a mismatch deletes the bytes and moves on to the next mirror.
- `extract_archive` checks every member of a tar or zip before it writes anything: no absolute
  paths, no `..`, no links that could lead outside, no devices or pipes.
- `download_and_extract` does both for a data set. When no mirror works it raises one
  `DownloadError` that lists every mirror with its error, then the manual steps and the folder
  layout the data set expects.

Nothing here knows a data set: the mirrors and checksums live next to each data set in `real.py`.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import stat
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath
from typing import NamedTuple

from tqdm.auto import tqdm

from course_lib.utils import interactive

__all__ = [
    "DownloadError",
    "RemoteFile",
    "download_and_extract",
    "download_file",
    "extract_archive",
    "manual_steps",
]

_ATTEMPTS_PER_MIRROR = 3  # a mirror is asked again only while each attempt adds bytes
_CHECKSUM = re.compile(r"(md5:[0-9a-f]{32}|sha256:[0-9a-f]{64})")
_USER_AGENT = "course_lib (Python urllib)"


class DownloadError(RuntimeError):
    """No mirror delivered a file with the expected size and checksum."""


class RemoteFile(NamedTuple):
    """One archive of a data set and where it can be had."""

    name: str  # the file name on disk, e.g. "VOCtrainval_11-May-2012.tar"
    mirrors: tuple[str, ...]  # URLs serving the same bytes, tried in order
    checksum: str | None = None  # "md5:<hex>" or "sha256:<hex>"; None when none is trustworthy
    size: int | None = None  # bytes, when documented; otherwise the server's Content-Length


def download_and_extract(
    title: str, files: Sequence[RemoteFile], folder: str | Path, layout: Sequence[str]
) -> None:
    """Download each of `files` into `folder`, extract it there and delete the archive.

    `layout` lists what the extracted tree holds, relative to `folder` (e.g.
    `"VOCdevkit/VOC2012/JPEGImages/*.jpg"`); it is only used in the error message.
    """
    folder = Path(folder)
    for file in files:
        try:
            archive = download_file(file.mirrors, folder / file.name, file.checksum, size=file.size)
        except DownloadError as error:  # one message: what failed, then what to do by hand
            raise DownloadError(
                f"{error}\n\n{manual_steps(title, files, folder, layout)}"
            ) from None
        extract_archive(archive, folder)
        archive.unlink()


def manual_steps(
    title: str, files: Sequence[RemoteFile], folder: Path, layout: Sequence[str]
) -> str:
    """How to install a data set by hand: which files from where, and the folder layout."""
    lines = [f"To install {title} by hand:"]
    for step, file in enumerate(files, start=1):
        facts = [_human_size(file.size)] if file.size else []
        facts += [file.checksum] if file.checksum else []
        lines.append(
            f"  {step}. download {file.name}"
            + (f" ({', '.join(facts)})" if facts else "")
            + " from one of:"
        )
        lines += [f"       {url}" for url in file.mirrors]
    lines.append(
        f"  {len(files) + 1}. extract {'it' if len(files) == 1 else 'them'} into "
        f"{folder}, so that these exist:"
    )
    lines += [f"       {folder / pattern}" for pattern in layout]
    lines.append("Set COURSE_DATA_DIR to use another folder.")
    return "\n".join(lines)


def download_file(
    mirrors: Sequence[str],
    destination: str | Path,
    checksum: str | None = None,
    *,
    size: int | None = None,
    timeout: float = 60.0,
) -> Path:
    """Download one file from the first mirror that delivers it whole and verified.

    `checksum` is `"md5:<hex>"` or `"sha256:<hex>"` (None: only the size is checked, when known
    from `size` or the server). An existing `destination` with the right checksum is kept as it
    is. A leftover `<destination>.part` is resumed from whichever mirror answers; the checksum is
    what proves the pieces belong together, so pin one wherever a trustworthy value exists.
    """
    algorithm, expected = _check_download_arguments(mirrors, checksum)
    destination = Path(destination)
    if destination.exists():
        found = _digest(destination, algorithm) if algorithm else None
        if found == expected:
            return destination
        raise DownloadError(
            f"{destination} exists but its {algorithm} is {found}, not "
            f"{expected}: it is not the expected file; delete it and retry"
        )
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".part")
    failures = []
    for url in mirrors:
        error = _download_from(url, partial, size, timeout)
        if error is None and algorithm and (found := _digest(partial, algorithm)) != expected:
            partial.unlink()  # never resume from bytes known to be wrong
            error = ValueError(
                f"{algorithm} checksum {found} differs from the pinned {expected} "
                "(corrupt download, or the file changed upstream)"
            )
        if error is None:
            os.replace(partial, destination)
            return destination
        print(f"  {url} failed ({error})")
        failures.append(f"  - {url}: {error}")
    raise DownloadError(
        f"could not download {destination.name} from any of its "
        f"{len(mirrors)} mirror(s):\n" + "\n".join(failures) + "\n"
        f"Download it by hand from one of them and save it as {destination}."
    )


def extract_archive(archive: str | Path, destination: str | Path) -> Path:
    """Extract a .zip or .tar(.gz) into `destination`, all or nothing.

    Every member is checked first (see `_why_unsafe`), so a hostile archive is refused before a single
    byte is written; the files then go through a temporary folder and are moved in at the end.
    """
    archive, destination = Path(archive), Path(destination)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zipped:
            _refuse_unsafe(
                archive, [(info.filename, _zip_kind(info), None) for info in zipped.infolist()]
            )
            _extract_into(destination, zipped.extractall)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tarred:
            _refuse_unsafe(
                archive,
                [
                    (member.name, _tar_kind(member), member.linkname or None)
                    for member in tarred.getmembers()
                ],
            )
            # tarfile's "data" filter (Python >= 3.11.4) checks once more, on the real paths
            extract = (
                (lambda folder: tarred.extractall(folder, filter="data"))
                if hasattr(tarfile, "data_filter")
                else tarred.extractall
            )
            _extract_into(destination, extract)
    else:
        raise ValueError(f"{archive}: not a zip or tar archive")
    return destination


def _download_from(url: str, partial: Path, size: int | None, timeout: float) -> Exception | None:
    """Fetch `url` into `partial`, retrying while each attempt makes progress; the last error."""
    for _ in range(_ATTEMPTS_PER_MIRROR):
        before = _size_of(partial)
        try:
            _fetch(url, partial, size, timeout)
            return None
        except (OSError, http.client.HTTPException, ValueError) as error:  # URLError is an OSError
            last_error = error
        if _size_of(partial) == before:
            break
    return last_error


def _fetch(url: str, partial: Path, size: int | None, timeout: float) -> None:
    """Append the rest of `url` to `partial` (all of it when the server ignores `Range`)."""
    name, offset = partial.name.removesuffix(".part"), _size_of(partial)
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416:  # the .part is as long as the file, or longer: start over
            partial.unlink()
        raise
    with response:
        if getattr(response, "status", None) != 206:  # 200 (Range ignored) or file://
            offset = 0
        elif not response.headers.get("Content-Range", "").startswith(f"bytes {offset}-"):
            raise ValueError(
                f"asked for bytes {offset}- but got {response.headers['Content-Range']}"
            )
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else size
        if size is not None and total != size:
            raise ValueError(f"the server offers {total} bytes, expected {size}")
        print(
            f"Resuming {name} at {_human_size(offset)} of {_human_size(total)} from {url}"
            if offset
            else f"Downloading {name} ({_human_size(total)}) from {url}"
        )
        with (
            open(partial, "ab" if offset else "wb") as out,
            tqdm(
                total=total,
                initial=offset,
                unit="B",
                unit_scale=True,
                leave=False,
                desc=name,
                disable=not interactive(),
            ) as bar,
        ):  # quiet in CI logs
            while chunk := response.read(1 << 20):
                out.write(chunk)
                bar.update(len(chunk))
    if total is not None and _size_of(partial) != total:
        # http.client returns b"" when a connection closes early; only the size tells
        raise ConnectionError(f"connection closed after {_size_of(partial)} of {total} bytes")


def _refuse_unsafe(archive: Path, members: list[tuple[str, str, str | None]]) -> None:
    """Raise before extraction if any (name, kind, link target) member could write elsewhere."""
    for name, kind, target in members:
        problem = _why_unsafe(name, kind, target)
        if problem:
            raise ValueError(
                f"{archive}: refusing to extract {name!r} ({problem}); nothing was extracted"
            )


def _why_unsafe(name: str, kind: str, target: str | None) -> str | None:
    """Why a member is unsafe, or None.

    Stricter than needed, to stay simple: a link may only point down into its own folder (no
    `..`, not absolute), so no chain of links can lead outside, whatever the order of members.
    The course's archives are not expected to hold links at all.
    """
    if kind not in ("file", "dir", "link"):
        return f"a {kind}"
    for path, what in ((name, "path"), (target, "link target")):
        if path is None:
            continue
        parts = PurePosixPath(path.replace("\\", "/")).parts
        if path.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", path):
            return f"absolute {what}"
        if ".." in parts:
            return f"'..' in the {what}"
    return None


def _tar_kind(member: tarfile.TarInfo) -> str:
    if member.isfile() or member.isdir():
        return "file" if member.isfile() else "dir"
    if member.issym() or member.islnk():
        return "link"
    return "device, pipe or other special file"


def _zip_kind(info: zipfile.ZipInfo) -> str:
    kind = stat.S_IFMT(info.external_attr >> 16)  # 0 when the zip was not made on Unix
    if kind in (0, stat.S_IFREG, stat.S_IFDIR):
        return "dir" if info.is_dir() else "file"
    # zipfile would write a link as a small text file holding its target: refused as well
    return "symbolic link, device or other special file"


def _extract_into(destination: Path, extract: Callable[[str], object]) -> None:
    """Run `extract(folder)` into a scratch folder, then move what it made into `destination`."""
    destination.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=destination, prefix=".extract-") as scratch:
        extract(scratch)
        for entry in Path(scratch).iterdir():
            target = destination / entry.name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
            os.replace(entry, target)


def _check_download_arguments(
    mirrors: Sequence[str], checksum: str | None
) -> tuple[str | None, str | None]:
    """(algorithm, hex digest) of `checksum`, (None, None) without one; TypeError/ValueError."""
    if isinstance(mirrors, str) or not mirrors or not all(isinstance(u, str) for u in mirrors):
        raise TypeError(
            f"mirrors must be a non-empty list of URLs (wrap one URL as [url]), got {mirrors!r}"
        )
    if checksum is None:
        return None, None
    if not _CHECKSUM.fullmatch(checksum.lower()):
        raise ValueError(
            f"checksum must be 'md5:<32 hex digits>' or 'sha256:<64 hex digits>', got {checksum!r}"
        )
    algorithm, digest = checksum.lower().split(":")
    return algorithm, digest


def _digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm, usedforsecurity=False)  # md5 checks integrity, not trust
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _size_of(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _human_size(size: int | None) -> str:
    if size is None:
        return "size unknown"
    for unit in ("bytes", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1000
