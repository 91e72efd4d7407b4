"""Downloads against a local HTTP server: mirrors, checksums, resume, one clear failure, safe archives.

The server runs on 127.0.0.1 in a thread and is stopped after each test; nothing reaches the
internet. It serves fixture archives built here with the names and layouts of the real ones, and
plays the ways mirrors fail: a 404, a connection closed before any answer, corrupted bytes, a
connection cut half-way through the first transfer, and a server that ignores `Range`.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import re
import stat
import tarfile
import threading
import zipfile

import numpy as np
import pytest
from PIL import Image

from course_lib.data import real
from course_lib.data.download import DownloadError, RemoteFile, download_file, extract_archive
from course_lib.data.real import OxfordPetSegmentation, PascalVOCSegmentation, medical_dataset

pytestmark = pytest.mark.timeout(60)


# -- the local mirror --------------------------------------------------------------------------------


class _Mirror(http.server.BaseHTTPRequestHandler):
    """Serves `files` (path -> bytes); the other class attributes say how to misbehave."""

    files: dict[str, bytes]
    dead: dict[str, str]  # path -> "404" or "close" (connection closed before any answer)
    corrupt: set[str]  # served with one byte changed, same length
    cut_once: dict[str, int]  # path -> bytes sent before the first transfer is cut
    ranges: bool  # honour Range requests (206) or ignore them (200, whole file)
    requests: list[tuple[str, str | None]]  # (path, Range header) of every request

    def do_GET(self):
        self.requests.append((self.path, self.headers.get("Range")))
        if self.dead.get(self.path) == "close":
            self.close_connection = True
            return
        if self.path not in self.files or self.dead.get(self.path) == "404":
            self.send_error(404)
            return
        body = self.files[self.path]
        if self.path in self.corrupt:
            body = body[:100] + bytes([body[100] ^ 0xFF]) + body[101:]
        start = int(re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "bytes=0-")[1])
        if not self.ranges:
            start = 0
        if start >= len(body):
            self.send_error(416)
            return
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        cut = self.cut_once.pop(self.path, None)
        self.wfile.write(body[start:cut])  # cut=None: everything
        self.close_connection = True

    def log_message(self, *args):  # keep the test output clean
        pass


@pytest.fixture
def mirror():
    """The handler class of a running server (fresh state); `mirror.url` is its address."""
    state = {
        "files": {},
        "dead": {},
        "corrupt": set(),
        "cut_once": {},
        "ranges": True,
        "requests": [],
    }
    handler = type("Mirror", (_Mirror,), state)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    handler.url = f"http://127.0.0.1:{server.server_port}"
    try:
        yield handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def serve(mirror, name: str, body: bytes, hosts=("a", "b")) -> tuple[str, ...]:
    """Serve `body` as `/<host>/<name>` for each host; the URLs, in order."""
    for host in hosts:
        mirror.files[f"/{host}/{name}"] = body
    return tuple(f"{mirror.url}/{host}/{name}" for host in hosts)


def md5(body: bytes) -> str:
    return "md5:" + hashlib.md5(body).hexdigest()


# -- fixture archives in the real names and layouts ---------------------------------------------------


def image_bytes(array: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


def tar_bytes(members: dict[str, bytes], compress: bool = False) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz" if compress else "w") as tarred:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tarred.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def voc_tar() -> bytes:
    """VOCtrainval_11-May-2012.tar: VOCdevkit/VOC2012/{JPEGImages,SegmentationClass,ImageSets}."""
    base, rng = "VOCdevkit/VOC2012", np.random.default_rng(0)
    members = {}
    for name in ("2007_000032", "2007_000039"):
        mask = Image.fromarray(np.full((6, 9), 15, np.uint8), mode="L").convert("P")
        mask.putpalette([0, 0, 0] * 256)
        buffer = io.BytesIO()
        mask.save(buffer, format="PNG")
        members[f"{base}/JPEGImages/{name}.jpg"] = image_bytes(
            rng.integers(0, 256, (6, 9, 3), dtype=np.uint8), "JPEG"
        )
        members[f"{base}/SegmentationClass/{name}.png"] = buffer.getvalue()
    for split, names in (
        ("train", "2007_000032\n"),
        ("val", "2007_000039\n"),
        ("trainval", "2007_000032\n2007_000039\n"),
    ):
        members[f"{base}/ImageSets/Segmentation/{split}.txt"] = names.encode()
    return tar_bytes(members)


def pet_archives() -> dict[str, bytes]:
    """images.tar.gz (images/*.jpg) and annotations.tar.gz (annotations/trimaps, split files)."""
    names, rng = ("Abyssinian_1", "beagle_12"), np.random.default_rng(1)
    trimap = np.array([[2, 2, 3, 1, 1, 3, 2]] * 5, dtype=np.uint8)
    images = {
        f"images/{n}.jpg": image_bytes(rng.integers(0, 256, (5, 7, 3), dtype=np.uint8), "JPEG")
        for n in names
    }
    annotations = {f"annotations/trimaps/{n}.png": image_bytes(trimap, "PNG") for n in names}
    annotations["annotations/trainval.txt"] = b"Abyssinian_1 1 1 1\nbeagle_12 2 2 1\n"
    annotations["annotations/test.txt"] = b"beagle_12 2 2 1\n"
    return {
        "images.tar.gz": tar_bytes(images, compress=True),
        "annotations.tar.gz": tar_bytes(annotations, compress=True),
    }


def kvasir_zip() -> bytes:
    """kvasir-seg.zip: Kvasir-SEG/images/*.jpg and Kvasir-SEG/masks/*.jpg."""
    buffer = io.BytesIO()
    mask = np.zeros((16, 16), np.uint8)
    mask[4:12, 4:12] = 255
    with zipfile.ZipFile(buffer, "w") as zipped:
        zipped.writestr(
            "Kvasir-SEG/images/cju0qkwl35piu0993l0dewei2.jpg",
            image_bytes(np.full((16, 16, 3), 90, np.uint8), "JPEG"),
        )
        zipped.writestr("Kvasir-SEG/masks/cju0qkwl35piu0993l0dewei2.jpg", image_bytes(mask, "JPEG"))
    return buffer.getvalue()


# -- mirrors, checksums and resume -----------------------------------------------------------------


def test_dead_first_mirror_then_good_second(mirror, tmp_path, monkeypatch, capsys):
    body = voc_tar()
    urls = serve(mirror, "VOCtrainval_11-May-2012.tar", body)
    mirror.dead["/a/VOCtrainval_11-May-2012.tar"] = "404"
    monkeypatch.setattr(
        PascalVOCSegmentation,
        "FILES",
        (RemoteFile("VOCtrainval_11-May-2012.tar", urls, md5(body), len(body)),),
    )
    voc = PascalVOCSegmentation(tmp_path, download=True)
    assert len(voc) == 1 and voc[0][1].shape == (6, 9)
    assert [path for path, _ in mirror.requests] == [
        "/a/VOCtrainval_11-May-2012.tar",
        "/b/VOCtrainval_11-May-2012.tar",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["VOCdevkit"]  # the tar is deleted
    out = capsys.readouterr()
    assert (
        f"Downloading VOCtrainval_11-May-2012.tar ({len(body) / 1000:.1f} kB) from {urls[1]}"
        in out.out
    )
    assert out.err == ""  # the progress bar stays quiet off a terminal


def test_corrupt_archive_is_rejected_and_the_next_mirror_used(mirror, tmp_path, monkeypatch):
    archives = pet_archives()
    files = tuple(
        RemoteFile(name, serve(mirror, name, body), md5(body)) for name, body in archives.items()
    )
    mirror.corrupt.add("/a/images.tar.gz")
    monkeypatch.setattr(OxfordPetSegmentation, "FILES", files)
    pets = OxfordPetSegmentation(tmp_path, download=True)
    assert len(pets) == 2 and pets[0][1].shape == (5, 7)
    assert [path for path, _ in mirror.requests] == [
        "/a/images.tar.gz",
        "/b/images.tar.gz",
        "/a/annotations.tar.gz",
    ]
    base = tmp_path / "oxford-iiit-pet"
    assert sorted(p.name for p in base.iterdir()) == ["annotations", "images"]  # no .part left


def test_medical_set_without_checksum_uses_the_next_mirror(mirror, tmp_path, monkeypatch):
    urls = serve(mirror, "kvasir-seg.zip", kvasir_zip())
    mirror.dead["/a/kvasir-seg.zip"] = "close"
    recipe = real.MEDICAL_DATASETS["kvasir-seg"]._replace(
        archives=(RemoteFile("kvasir-seg.zip", urls),)
    )
    monkeypatch.setitem(real.MEDICAL_DATASETS, "kvasir-seg", recipe)
    kvasir = medical_dataset("kvasir-seg", root=tmp_path, download=True)
    assert len(kvasir) == 1 and kvasir[0][1].max() == 1


def test_interrupted_download_resumes_with_range(mirror, tmp_path):
    body = voc_tar()
    urls = serve(mirror, "VOCtrainval_11-May-2012.tar", body, hosts=("a",))
    mirror.cut_once["/a/VOCtrainval_11-May-2012.tar"] = 4000
    path = download_file(urls, tmp_path / "VOCtrainval_11-May-2012.tar", md5(body), timeout=5)
    assert path.read_bytes() == body
    assert mirror.requests == [
        ("/a/VOCtrainval_11-May-2012.tar", None),
        ("/a/VOCtrainval_11-May-2012.tar", "bytes=4000-"),
    ]


def test_leftover_part_file_is_resumed(mirror, tmp_path, capsys):
    body = tar_bytes({"x/data.bin": bytes(range(256)) * 40})
    urls = serve(mirror, "x.tar", body, hosts=("a",))
    (tmp_path / "x.tar.part").write_bytes(body[:3000])  # left by an earlier, interrupted run
    assert download_file(urls, tmp_path / "x.tar", md5(body)).read_bytes() == body
    assert mirror.requests == [("/a/x.tar", "bytes=3000-")]
    assert f"Resuming x.tar at 3.0 kB of {len(body) / 1000:.1f} kB" in capsys.readouterr().out


def test_server_ignoring_range_restarts_the_file(mirror, tmp_path):
    body = tar_bytes({"x/data.bin": bytes(range(256)) * 40})
    urls = serve(mirror, "x.tar", body, hosts=("a",))
    mirror.ranges = False
    mirror.cut_once["/a/x.tar"] = 2500
    assert download_file(urls, tmp_path / "x.tar", md5(body)).read_bytes() == body
    assert [rng for _, rng in mirror.requests] == [None, "bytes=2500-"]  # asked, got 200


def test_part_longer_than_the_file_starts_over(mirror, tmp_path):
    body = tar_bytes({"x/data.bin": b"abc" * 500})
    urls = serve(mirror, "x.tar", body, hosts=("a",))
    (tmp_path / "x.tar.part").write_bytes(b"\0" * (len(body) + 10))
    assert download_file(urls, tmp_path / "x.tar", md5(body)).read_bytes() == body
    assert [rng for _, rng in mirror.requests] == [
        f"bytes={len(body) + 10}-",
        None,
    ]  # 416, then all


def test_wrong_size_is_rejected_before_downloading(mirror, tmp_path):
    urls = serve(mirror, "x.bin", b"x" * 500)
    mirror.files["/b/x.bin"] = b"y" * 400
    assert download_file(urls[::-1], tmp_path / "x.bin", size=500).read_bytes() == b"x" * 500
    assert [path for path, _ in mirror.requests] == ["/b/x.bin", "/a/x.bin"]


def test_every_mirror_dead_gives_one_message_with_manual_steps(mirror, tmp_path, monkeypatch):
    body = voc_tar()
    urls = serve(mirror, "VOCtrainval_11-May-2012.tar", body, hosts=("a", "b", "c"))
    mirror.dead.update(
        {"/a/VOCtrainval_11-May-2012.tar": "404", "/b/VOCtrainval_11-May-2012.tar": "close"}
    )
    mirror.corrupt.add("/c/VOCtrainval_11-May-2012.tar")
    files = (RemoteFile("VOCtrainval_11-May-2012.tar", urls, md5(body), len(body)),)
    monkeypatch.setattr(PascalVOCSegmentation, "FILES", files)
    with pytest.raises(DownloadError) as info:
        PascalVOCSegmentation(tmp_path, download=True)
    message = str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__  # one message
    assert f"{urls[0]}: HTTP Error 404" in message
    assert f"{urls[1]}: Remote end closed connection" in message
    assert f"{urls[2]}: md5 checksum" in message and "differs from the pinned" in message
    assert (
        f"download VOCtrainval_11-May-2012.tar ({len(body) / 1000:.1f} kB, {md5(body)})" in message
    )
    for pattern in PascalVOCSegmentation.LAYOUT:
        assert str(tmp_path / pattern) in message
    assert f"extract it into {tmp_path}, so that these exist" in message
    assert list(tmp_path.iterdir()) == []  # no archive, no .part, no tree


def test_existing_good_file_is_not_downloaded_again(mirror, tmp_path):
    body = b"already here" * 100
    urls = serve(mirror, "x.bin", body)
    (tmp_path / "x.bin").write_bytes(body)
    assert download_file(urls, tmp_path / "x.bin", md5(body)) == tmp_path / "x.bin"
    assert download_file(urls, tmp_path / "x.bin", None) == tmp_path / "x.bin"
    assert mirror.requests == []
    (tmp_path / "x.bin").write_bytes(b"something else")
    with pytest.raises(DownloadError, match="delete it and retry"):
        download_file(urls, tmp_path / "x.bin", md5(body))
    assert mirror.requests == []


def test_extracted_data_set_is_not_downloaded_again(mirror, tmp_path, monkeypatch):
    body = voc_tar()
    files = (
        RemoteFile(
            "VOCtrainval_11-May-2012.tar",
            serve(mirror, "VOCtrainval_11-May-2012.tar", body),
            md5(body),
        ),
    )
    monkeypatch.setattr(PascalVOCSegmentation, "FILES", files)
    PascalVOCSegmentation(tmp_path, download=True)
    PascalVOCSegmentation(tmp_path, image_set="val", download=True)
    assert len(mirror.requests) == 1


@pytest.mark.parametrize(
    "mirrors, checksum, error",
    [
        ("http://127.0.0.1/x", None, TypeError),
        ((), None, TypeError),
        (("http://127.0.0.1/x",), "md5:123", ValueError),
        (("http://127.0.0.1/x",), "sha1:" + "0" * 40, ValueError),
    ],
)
def test_download_arguments_are_checked(tmp_path, mirrors, checksum, error):
    with pytest.raises(error, match="mirrors must be|checksum must be"):
        download_file(mirrors, tmp_path / "x", checksum)


# -- extraction refuses unsafe members ---------------------------------------------------------------


def tar_with(kind: str, name: str, target: str = "") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tarred:
        tarred.addfile(tarfile.TarInfo("ok/first.txt"), io.BytesIO(b""))
        info = tarfile.TarInfo(name)
        info.type = {
            "file": tarfile.REGTYPE,
            "symlink": tarfile.SYMTYPE,
            "hardlink": tarfile.LNKTYPE,
            "device": tarfile.CHRTYPE,
            "fifo": tarfile.FIFOTYPE,
        }[kind]
        info.linkname = target
        info.size = 5 if kind == "file" else 0
        tarred.addfile(info, io.BytesIO(b"owned") if kind == "file" else None)
    return buffer.getvalue()


def zip_with(name: str, symlink_to: str = "") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zipped:
        zipped.writestr("ok/first.txt", b"")
        info = zipfile.ZipInfo(name)
        if symlink_to:
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zipped.writestr(info, symlink_to or "owned")
    return buffer.getvalue()


@pytest.mark.parametrize(
    "archive, problem",
    [
        (tar_with("file", "../escaped.txt"), "'..' in the path"),
        (tar_with("file", "/tmp/escaped.txt"), "absolute path"),
        (tar_with("file", "ok/../../escaped.txt"), "'..' in the path"),
        (tar_with("symlink", "ok/link", "../../escaped.txt"), "'..' in the link target"),
        (tar_with("symlink", "ok/link", "/etc"), "absolute link target"),
        (tar_with("hardlink", "ok/hard", "../escaped.txt"), "'..' in the link target"),
        (tar_with("device", "ok/dev"), "device"),
        (tar_with("fifo", "ok/pipe"), "pipe"),
        (zip_with("../escaped.txt"), "'..' in the path"),
        (zip_with("..\\escaped.txt"), "'..' in the path"),
        (zip_with("/tmp/escaped.txt"), "absolute path"),
        (zip_with("C:/escaped.txt"), "absolute path"),
        (zip_with("ok/link", symlink_to="../../escaped.txt"), "symbolic link"),
    ],
    ids=[
        "tar-dotdot",
        "tar-absolute",
        "tar-inner-dotdot",
        "tar-symlink-out",
        "tar-symlink-abs",
        "tar-hardlink-out",
        "tar-device",
        "tar-fifo",
        "zip-dotdot",
        "zip-backslash",
        "zip-absolute",
        "zip-drive",
        "zip-symlink",
    ],
)
def test_unsafe_members_are_refused_before_anything_is_written(tmp_path, archive, problem):
    path = tmp_path / "evil.archive"
    path.write_bytes(archive)
    with pytest.raises(ValueError, match=re.escape(problem)):
        extract_archive(path, tmp_path / "out" / "data")
    assert not (tmp_path / "out").exists()  # not even the first, harmless member
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.archive"]


def test_links_inside_the_archive_are_kept(tmp_path):
    path = tmp_path / "ok.tar"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tarred:
        data = tarfile.TarInfo("top/data.txt")
        data.size = 5
        tarred.addfile(data, io.BytesIO(b"hello"))
        link = tarfile.TarInfo("top/alias.txt")
        link.type, link.linkname = tarfile.SYMTYPE, "data.txt"
        tarred.addfile(link)
    path.write_bytes(buffer.getvalue())
    extract_archive(path, tmp_path / "out")
    assert (tmp_path / "out" / "top" / "alias.txt").read_text() == "hello"
    assert (tmp_path / "out" / "top" / "alias.txt").is_symlink()


def test_remote_file_layouts_match_the_real_archives():
    """The pinned records: every file has mirrors, and the checksums torchvision pins."""
    (voc,) = PascalVOCSegmentation.FILES
    assert voc.checksum == "md5:6cd6e144f989b92b3379bac3b3de84fd" and len(voc.mirrors) >= 3
    assert {f.name: f.checksum for f in OxfordPetSegmentation.FILES} == {
        "images.tar.gz": "md5:5c4f3ee8e5d25df40f4fd59a7f44e54c",
        "annotations.tar.gz": "md5:95a8c909bbe2e81eed6a22bccdf3f68f",
    }
    assert all(
        url.endswith("/" + f.name) for f in (voc, *OxfordPetSegmentation.FILES) for url in f.mirrors
    )
    for recipe in real.MEDICAL_DATASETS.values():
        assert all(f.checksum is None and f.mirrors for f in recipe.archives)
