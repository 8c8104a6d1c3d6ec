"""``avsc download``: TAU Urban Audio-Visual Scenes 2021 from Zenodo, resumable and checked.

The package lists (file names, sizes, MD5s) are dcase_util's, the DCASE community's own
(:class:`dcase_util.datasets.TAUUrbanAudioVisualScenes_2021_DevelopmentSet`, Zenodo 4477542,
and ``..._EvaluationSet``, Zenodo 4767103); nothing here retypes them. dcase_util's own
downloader starts every file from zero; this one resumes.

Layout under ``out``:

- ``packages/<zip>``: each zip, renamed there only once its size and MD5 match the list;
  ``<zip>.part`` while it downloads (a rerun resumes it with an HTTP range request);
- the zips unpacked into ``out`` itself (``meta.csv``, ``audio/``, ``video/``,
  ``evaluation_setup/``): the root that ``AVSC_DATA_ROOT``, ``avsc validate`` and
  ``avsc submit`` read. A single top folder inside a zip
  (``TAU-urban-audio-visual-scenes-2021-development/``) is dropped.

Every file is written under a temporary name and renamed, so a killed run leaves nothing
half-written behind a final name; ``packages/avsc-download.json`` records what was checked
and unpacked, so a rerun neither hashes 100 GB again nor unpacks twice. A file this command
did not write (a zip that fails its check, a different file where a zip member goes) is
reported, never deleted or overwritten.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import logging
import os
import shutil
import socket
import tempfile
import time
import urllib.error
import urllib.request
import warnings
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from avsc.utils import atomic_path, atomic_write_json, exclusive_lock

log = logging.getLogger(__name__)

#: ``--dataset`` -> (dcase_util class, where the files live)
DATASETS = {
    "dev": ("TAUUrbanAudioVisualScenes_2021_DevelopmentSet", "https://zenodo.org/record/4477542"),
    "eval": ("TAUUrbanAudioVisualScenes_2021_EvaluationSet", "https://zenodo.org/record/4767103"),
}
#: what ``avsc download`` fetches unless told otherwise (dcase_util also lists ``examples``)
DEFAULT_CONTENT = ("documentation", "meta", "audio", "video")
PACKAGES = "packages"
STATE = "avsc-download.json"
CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A package cannot be fetched, fails its check or cannot be unpacked; names it."""


@dataclass(frozen=True)
class Package:
    """One file of a dataset's package list."""

    name: str
    url: str
    size: int
    md5: str
    content: str


def package_list(
    dataset: str, content: Iterable[str] = DEFAULT_CONTENT, mirror: str | None = None
) -> list[Package]:
    """The packages of ``dataset`` (``dev`` or ``eval``) whose content type is in ``content``,
    from dcase_util's list. ``mirror`` (a URL prefix) replaces Zenodo's folder."""
    if dataset not in DATASETS:
        raise DownloadError(f"unknown dataset {dataset!r}; choose from {', '.join(DATASETS)}")
    try:
        with warnings.catch_warnings():  # dcase_util's "pkg_resources is deprecated"
            warnings.simplefilter("ignore")
            import dcase_util.datasets as dd
    except ImportError as exc:  # dcase_util imports pkg_resources (setuptools < 81)
        raise DownloadError(
            f"the package lists come from dcase_util, which cannot be imported here ({exc}); "
            "install it: pip install dcase_util 'setuptools<81'"
        ) from exc
    cls_name, _ = DATASETS[dataset]
    # the constructor only computes paths (nothing is written); the list is all we read
    items = getattr(dd, cls_name)(data_path=tempfile.gettempdir()).package_list
    known = {str(i["content_type"]) for i in items}
    content = list(content)
    unknown = sorted(set(content) - known)
    if unknown:
        raise DownloadError(
            f"unknown content {unknown} for {dataset}; dcase_util lists {sorted(known)}"
        )
    out = []
    for item in items:
        if str(item["content_type"]) not in content:
            continue
        name = Path(item["filename"]).name
        url = item["remote_file"]
        if mirror:
            url = f"{mirror.rstrip('/')}/{name}"
        out.append(
            Package(
                name, url, int(item["remote_bytes"]), str(item["remote_md5"]).lower(),
                str(item["content_type"]),
            )
        )  # fmt: skip
    return out


def md5sum(path: str | os.PathLike) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


class _State:
    """``packages/avsc-download.json``: packages checked (size, mtime, MD5) and unpacked."""

    def __init__(self, folder: Path):
        self.path = folder / STATE
        data = {}
        if self.path.is_file():
            with contextlib.suppress(ValueError, OSError):
                data = json.loads(self.path.read_text())
        self.checked: dict[str, dict] = dict(data.get("checked", {}))
        self.unpacked: set[str] = set(data.get("unpacked", []))

    def save(self) -> None:
        atomic_write_json(self.path, {"checked": self.checked, "unpacked": sorted(self.unpacked)})

    def is_checked(self, pkg: Package, path: Path) -> bool:
        rec = self.checked.get(pkg.name)
        if not rec or not path.is_file():
            return False
        st = path.stat()
        return rec == {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "md5": pkg.md5}

    def mark_checked(self, pkg: Package, path: Path) -> None:
        st = path.stat()
        self.checked[pkg.name] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "md5": pkg.md5}
        self.save()


def _gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def _request(url: str, start: int, part: Path, timeout: float) -> None:
    """GET ``url`` into ``part``, from byte ``start`` on (an HTTP range request) when the
    server honours it, else from the beginning."""
    headers = {"User-Agent": "avsc-download"}
    if start:
        headers["Range"] = f"bytes={start}-"
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as r:
        resumed = start and r.status == 206
        if resumed and not (r.headers.get("Content-Range") or "").startswith(f"bytes {start}-"):
            resumed = False  # a range we did not ask for: start again
        with open(part, "ab" if resumed else "wb") as f:
            # read1: what has arrived, up to a block (read(CHUNK) waits for a whole block, and
            # a stall or timeout inside it loses the bytes already received)
            while block := r.read1(CHUNK):
                f.write(block)


def fetch(
    pkg: Package,
    folder: str | os.PathLike,
    state: _State | None = None,
    retries: int = 3,
    timeout: float = 60.0,
    backoff: float = 5.0,
    say: Callable[[str], None] = print,
) -> Path:
    """``folder/pkg.name``, downloaded (resuming ``<name>.part``) and checked against the
    list's size and MD5. A connection that drops is resumed, up to ``retries`` times in a row
    without progress; a file whose MD5 differs is fetched again, up to ``retries`` times."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = state or _State(folder)
    final, part = folder / pkg.name, folder / f"{pkg.name}.part"
    if final.exists():
        return _check_existing(pkg, final, state)
    stalled = corrupted = 0
    while True:
        have = part.stat().st_size if part.is_file() else 0
        if have > pkg.size:  # our partial file, longer than the package: start again
            part.unlink()
            have = 0
        if have < pkg.size:
            if have:
                say(f"{pkg.name}: resuming at {_gb(have)} of {_gb(pkg.size)}")
            try:
                _request(pkg.url, have, part, timeout)
                error = None
            except urllib.error.HTTPError as exc:
                if exc.code < 500 and exc.code not in (408, 429):
                    raise DownloadError(
                        f"{pkg.name}: {pkg.url}: HTTP {exc.code} {exc.reason}"
                    ) from None
                error = f"HTTP {exc.code} {exc.reason}"
            except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
                error = str(getattr(exc, "reason", None) or exc) or type(exc).__name__
                if isinstance(
                    getattr(exc, "reason", exc), (socket.gaierror, ConnectionRefusedError)
                ):
                    stalled = retries  # no such host, nobody listening: no network, say so now
            now = part.stat().st_size if part.is_file() else 0
            if now < pkg.size:
                stalled = 0 if now > have else stalled + 1
                why = error or f"the connection closed at {_gb(now)} of {_gb(pkg.size)}"
                if stalled > retries:
                    raise DownloadError(_give_up(pkg, part, now, why))
                say(f"{pkg.name}: {why}; retrying")
                time.sleep(backoff * stalled)
                continue
        got = md5sum(part)
        if part.stat().st_size == pkg.size and got == pkg.md5:
            os.replace(part, final)
            state.mark_checked(pkg, final)
            return final
        part.unlink()
        corrupted += 1
        why = f"MD5 {got}, expected {pkg.md5} (dcase_util's list)"
        if corrupted > retries:
            raise DownloadError(
                f"{pkg.name}: {why} on each of {corrupted} downloads from {pkg.url}"
            )
        say(f"{pkg.name}: {why}; fetching it again")


def _check_existing(pkg: Package, path: Path, state: _State) -> Path:
    """A package already in place (downloaded earlier, or put there by hand): checked, never
    deleted."""
    if state.is_checked(pkg, path):
        return path
    size = path.stat().st_size
    if size != pkg.size:
        raise DownloadError(
            f"{path}: {size} bytes, expected {pkg.size} (dcase_util's list); not written by "
            "avsc download, so it is left alone: delete or replace it and rerun"
        )
    got = md5sum(path)
    if got != pkg.md5:
        raise DownloadError(
            f"{path}: MD5 {got}, expected {pkg.md5} (dcase_util's list); not written by avsc "
            "download, so it is left alone: delete or replace it and rerun"
        )
    state.mark_checked(pkg, path)
    return path


def _give_up(pkg: Package, part: Path, have: int, why: str) -> str:
    site = pkg.url.split("/files/")[0] if "/files/" in pkg.url else pkg.url.rsplit("/", 1)[0]
    kept = f"{_gb(have)} of {_gb(pkg.size)} kept in {part.name}, " if have else ""
    return (
        f"{pkg.name}: cannot download {pkg.url} ({why}); {kept}rerun to resume. Without "
        f"network access here, fetch the files from "
        f"{site} on another machine into {part.parent} and rerun: files already there are "
        "checked and unpacked"
    )


def _members(zf: zipfile.ZipFile, path: Path) -> list[tuple[zipfile.ZipInfo, PurePosixPath]]:
    """The zip's files and where each goes, relative to the dataset root: a single top folder
    common to every member is dropped; a member that would land outside the root is refused."""
    infos = [i for i in zf.infolist() if not i.is_dir()]
    names = [PurePosixPath(i.filename) for i in infos]
    tops = {n.parts[0] for n in names if len(n.parts) > 1}
    strip = len(tops) == 1 and all(len(n.parts) > 1 for n in names)
    out = []
    for info, name in zip(infos, names, strict=True):
        rel = PurePosixPath(*name.parts[1:]) if strip else name
        if rel.is_absolute() or ".." in rel.parts or not rel.parts:
            raise DownloadError(f"{path}: member {info.filename!r} would land outside the root")
        out.append((info, rel))
    return out


#: a member expanding more than this many times its compressed size, once past
#: :data:`BOMB_FLOOR` bytes, is refused (TAU's WAV and MP4 members expand less than 2x)
BOMB_RATIO = 100
BOMB_FLOOR = 64 << 20


def _check_expansion(path: Path, members) -> None:
    """A :class:`DownloadError` naming the first member whose declared size is beyond reason
    for its compressed size (a zip bomb), or when all of them together would expand past
    :data:`BOMB_RATIO` times the zip. zipfile never writes more than a member declares."""
    total = 0
    for info, _ in members:
        total += info.file_size
        if info.file_size > BOMB_FLOOR and info.file_size > BOMB_RATIO * max(info.compress_size, 1):
            raise DownloadError(
                f"{path}: member {info.filename!r} would expand from {info.compress_size} to "
                f"{info.file_size} bytes ({info.file_size / max(info.compress_size, 1):.0f}x); "
                "refused as a zip bomb (the dataset's members expand less than 2x)"
            )
    size = path.stat().st_size
    if total > BOMB_FLOOR and total > BOMB_RATIO * max(size, 1):
        raise DownloadError(
            f"{path}: its members would expand to {total} bytes, {total / size:.0f}x the zip; "
            "refused as a zip bomb"
        )


def unpack(path: str | os.PathLike, root: str | os.PathLike) -> int:
    """Unpack the zip ``path`` into ``root``; returns the number of files written. A member
    already there with its size is kept (a rerun after a kill); a different file where a
    member goes is an error, never overwritten. zipfile checks each member's CRC; a zip
    that would expand beyond reason is refused before anything is written
    (:func:`_check_expansion`)."""
    path, root = Path(path), Path(root)
    written = 0
    try:
        with zipfile.ZipFile(path) as zf:
            members = _members(zf, path)
            _check_expansion(path, members)
            for info, rel in members:
                target = root.joinpath(*rel.parts)
                if target.is_file():
                    if target.stat().st_size == info.file_size:
                        continue
                    raise DownloadError(
                        f"{target}: exists with {target.stat().st_size} bytes, but {path.name} "
                        f"holds {info.file_size}; not overwritten: move it away and rerun"
                    )
                with zf.open(info) as src, atomic_path(target) as tmp, open(tmp, "wb") as dst:
                    shutil.copyfileobj(src, dst, CHUNK)
                written += 1
    except zipfile.BadZipFile as exc:
        raise DownloadError(f"{path}: not a readable zip ({exc})") from exc
    return written


def download(
    dataset: str,
    out: str | os.PathLike,
    content: Sequence[str] = DEFAULT_CONTENT,
    mirror: str | None = None,
    remove_zips: bool = False,
    packages: Sequence[Package] | None = None,
    say: Callable[[str], None] = print,
    **fetch_options,
) -> Path:
    """Download ``dataset`` (``dev`` or ``eval``) into ``out`` and unpack it there; returns
    ``out``, the dataset root. ``packages`` replaces dcase_util's list (tests, other sets).
    Resumable: rerun the same command after an interruption."""
    out = Path(out)
    pkgs = list(packages) if packages is not None else package_list(dataset, content, mirror)
    folder = out / PACKAGES
    folder.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(folder / ".avsc.lock", f"download folder {out}"):
        state = _State(folder)
        todo = [p for p in pkgs if p.name not in state.unpacked]
        _check_disk(out, folder, todo, remove_zips)
        for k, pkg in enumerate(pkgs, 1):
            if pkg.name in state.unpacked:
                say(f"[{k}/{len(pkgs)}] {pkg.name}: unpacked already")
                continue
            say(f"[{k}/{len(pkgs)}] {pkg.name} ({pkg.content}, {_gb(pkg.size)})")
            zpath = fetch(pkg, folder, state, say=say, **fetch_options)
            n = unpack(zpath, out)
            state.unpacked.add(pkg.name)
            state.save()
            say(f"[{k}/{len(pkgs)}] {pkg.name}: checked, {n} file(s) unpacked into {out}")
            if remove_zips:
                zpath.unlink()
    return out


def _check_disk(out: Path, folder: Path, todo: Sequence[Package], remove_zips: bool) -> None:
    """Refuse to start when ``out`` cannot hold what is left: each package still to download,
    and its content unpacked (about the zip's size: WAV and MP4 barely compress); with
    ``remove_zips`` only the largest zip is on disk beside the unpacked data at a time."""
    missing = [p.size - _have(folder, p) for p in todo]
    unpacked = sum(p.size for p in todo)
    need = (max(missing, default=0) if remove_zips else sum(missing)) + unpacked
    free = shutil.disk_usage(out).free
    if need > free:
        raise DownloadError(
            f"{out}: {_gb(free)} free, the download needs about {_gb(need)} "
            f"({_gb(sum(missing))} still to fetch, {_gb(unpacked)} unpacked"
            + ("" if remove_zips else "; --remove-zips deletes each zip once unpacked")
            + ")"
        )


def _have(folder: Path, pkg: Package) -> int:
    for path in (folder / pkg.name, folder / f"{pkg.name}.part"):
        if path.is_file():
            return min(path.stat().st_size, pkg.size)
    return 0


def describe(pkgs: Sequence[Package], out: str | os.PathLike | None = None) -> str:
    """The package list as a table, with what ``out`` holds of each."""
    folder = Path(out) / PACKAGES if out else None
    state = _State(folder) if folder else None
    lines = [f"{'package':<62} {'content':<13} {'size':>10}  {'md5':<32}  state"]
    for p in pkgs:
        have = _have(folder, p) if folder else 0
        if state and p.name in state.unpacked:
            where = "unpacked"
        elif folder and (folder / p.name).is_file():
            where = "downloaded"
        elif have:
            where = f"partial {100 * have / p.size:.0f} %"
        else:
            where = "-"
        lines.append(f"{p.name:<62} {p.content:<13} {_gb(p.size):>10}  {p.md5}  {where}")
    lines.append(f"{len(pkgs)} package(s), {_gb(sum(p.size for p in pkgs))}")
    return "\n".join(lines)
