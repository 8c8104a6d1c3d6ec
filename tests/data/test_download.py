"""``avsc download`` against a loopback HTTP server serving stand-in zips of a synthetic
dataset in the TAU layout: the packages arrive, are checked and unpack into a root that
``validate`` accepts; an interrupted download resumes with a range request; a corrupted
package is detected and fetched again; files avsc did not write are left alone."""

from __future__ import annotations

import hashlib
import http.server
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest

from avsc.data.download import DownloadError, Package, download, fetch, package_list

TOP = "TAU-urban-audio-visual-scenes-2021-development"


class Server(http.server.ThreadingHTTPServer):
    """Serves ``files`` (name -> bytes) with HTTP range support; ``cut[name] = n`` sends only
    the first n bytes of the next full response of that file, then drops the connection;
    ``corrupt[name]`` serves one flipped byte the next time; ``log`` records (name, Range)."""

    daemon_threads = True

    def __init__(self, files: dict[str, bytes]):
        super().__init__(("127.0.0.1", 0), Handler)
        self.files, self.cut, self.corrupt, self.log = files, {}, set(), []
        self.sent: dict[str, int] = {}
        self.stall: dict[str, int] = {}  # name -> bytes sent before going silent (once)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):  # noqa: N802 - http.server's name
        srv: Server = self.server
        name = self.path.lstrip("/")
        rng = self.headers.get("Range")
        srv.log.append((name, rng))
        if name not in srv.files:
            self.send_error(404)
            return
        data = srv.files[name]
        if name in srv.corrupt:
            srv.corrupt.discard(name)
            data = data[:100] + bytes([data[100] ^ 0xFF]) + data[101:]
        start = int(rng.split("=")[1].split("-")[0]) if rng else 0
        body = data[start:]
        self.send_response(206 if rng else 200)
        if rng:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not rng and name in srv.cut:
            body = body[: srv.cut.pop(name)]
            self.close_connection = True
        if name in srv.stall:  # a server that goes silent mid-transfer
            self.wfile.write(body[: srv.stall.pop(name)])
            self.wfile.flush()
            time.sleep(3)
            self.close_connection = True
            return
        self.wfile.write(body)
        srv.sent[name] = srv.sent.get(name, 0) + len(body)


def _zip(path: Path, root: Path, files: list[Path]) -> bytes:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for f in files:
            z.write(f, f"{TOP}/{f.relative_to(root).as_posix()}")
    return path.read_bytes()


@pytest.fixture(scope="module")
def standin(synth_store, tmp_path_factory):
    """Stand-in packages of the shared synthetic dataset, split like the real set (meta, audio
    in two parts, video) under the real top folder, served on loopback."""
    root, _ = synth_store
    tmp = tmp_path_factory.mktemp("zips")
    meta = [root / "meta.csv", *sorted((root / "evaluation_setup").iterdir())]
    audio = sorted((root / "audio").iterdir())
    video = sorted((root / "video").iterdir())
    parts = {
        f"{TOP}.meta.zip": meta,
        f"{TOP}.audio.1.zip": audio[: len(audio) // 2],
        f"{TOP}.audio.2.zip": audio[len(audio) // 2 :],
        f"{TOP}.video.1.zip": video,
    }
    files = {name: _zip(tmp / name, root, fs) for name, fs in parts.items()}
    srv = Server(files)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    pkgs = [
        Package(n, f"{srv.url}/{n}", len(b), hashlib.md5(b).hexdigest(), n.split(".")[1])
        for n, b in files.items()
    ]
    yield root, srv, pkgs
    srv.shutdown()


def test_the_lists_are_dcase_utils():
    dev = package_list("dev")
    assert [p.content for p in dev].count("audio") == 8 and len(dev) == 26
    assert all(p.url.startswith("https://zenodo.org/record/4477542/files/") for p in dev)
    assert 107e9 < sum(p.size for p in dev) < 108e9  # the 108 GB of the issue
    ev = package_list("eval", ["meta"], mirror="http://mirror/x/")
    assert [p.url for p in ev] == [
        "http://mirror/x/TAU-urban-audio-visual-scenes-2021-evaluation.meta.zip"
    ]
    assert all(len(p.md5) == 32 for p in dev + ev)
    with pytest.raises(DownloadError, match="unknown content"):
        package_list("dev", ["audio", "pictures"])


def test_download_resumes_refetches_a_corrupted_part_and_unpacks_the_layout(standin, tmp_path):
    from avsc.data.validate import validate_dataset

    root, srv, pkgs = standin
    audio1, video = pkgs[1], pkgs[3]
    srv.log.clear()
    srv.sent.clear()
    srv.cut[audio1.name] = audio1.size // 3  # the connection drops a third of the way
    srv.corrupt.add(video.name)  # one flipped byte in the first copy
    said = []
    out = download("dev", tmp_path / "tau", packages=pkgs, say=said.append, backoff=0)

    # resumed: a range request from where the connection dropped, no byte sent twice
    assert (audio1.name, f"bytes={audio1.size // 3}-") in srv.log
    assert srv.sent[audio1.name] == audio1.size
    # the corrupted copy was caught by its MD5 and fetched again, in full
    assert [n for n, _ in srv.log].count(video.name) == 2
    assert any("MD5" in s and "fetching it again" in s for s in said)
    # unpacked into the layout avsc reads, byte for byte
    for f in [*root.rglob("*.wav"), *root.rglob("*.mp4"), root / "meta.csv"]:
        rel = f.relative_to(root)
        assert (out / rel).read_bytes() == f.read_bytes(), rel
    report = validate_dataset(out, clip_seconds=3.0, workers=1)
    assert report.ok, report.format()
    assert not list((out / "packages").glob("*.part"))

    # a rerun fetches nothing and unpacks nothing
    srv.log.clear()
    said.clear()
    download("dev", out, packages=pkgs, say=said.append, backoff=0)
    assert srv.log == [] and all("unpacked already" in s for s in said)


def test_a_corrupt_file_not_written_by_avsc_is_named_and_kept(standin, tmp_path):
    _, srv, pkgs = standin
    meta = pkgs[0]
    folder = tmp_path / "tau" / "packages"
    folder.mkdir(parents=True)
    mine = folder / meta.name
    mine.write_bytes(b"x" * meta.size)  # right size, wrong content: put there by hand
    with pytest.raises(DownloadError, match=r"MD5 .* expected .*left alone"):
        fetch(meta, folder, backoff=0)
    assert mine.read_bytes() == b"x" * meta.size


def test_a_package_that_keeps_failing_gives_up_in_one_line(standin, tmp_path):
    _, srv, pkgs = standin
    meta = pkgs[0]
    bad = Package(meta.name, meta.url, meta.size, "0" * 32, "meta")  # the list disagrees
    with pytest.raises(DownloadError, match=r"MD5 \w+, expected 0{32}.* each of 3 downloads"):
        fetch(bad, tmp_path, retries=2, backoff=0)
    assert not list(tmp_path.iterdir())  # its own partial files are gone


def test_no_network_names_the_local_file_alternative(tmp_path):
    """A closed port stands in for an unreachable Zenodo: one line, no traceback, saying how
    to proceed with files fetched elsewhere."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends
    r = subprocess.run(
        [sys.executable, "-m", "avsc", "download", "--dataset", "eval", "--content", "meta",
         "--out", str(tmp_path / "ev"), "--mirror", f"http://127.0.0.1:{port}"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert "evaluation.meta.zip: cannot download" in lines[0]
    assert f"into {tmp_path / 'ev' / 'packages'} and rerun" in lines[0]


def test_a_stalled_server_keeps_the_bytes_received_and_resumes_after_them(standin, tmp_path):
    """Issue 21: a read waited for a whole 1-MiB block, so a server going silent mid-block
    lost what it had sent. The bytes received are kept, and the retry asks for the rest."""
    _, srv, pkgs = standin
    pkg = pkgs[1]  # an audio package, larger than what is sent before the stall
    assert pkg.size > 20000
    srv.stall[pkg.name] = 5000
    srv.log.clear()
    say = []
    path = fetch(pkg, tmp_path, retries=1, timeout=0.5, backoff=0, say=say.append)
    assert hashlib.md5(path.read_bytes()).hexdigest() == pkg.md5
    asked = [rng for name, rng in srv.log if name == pkg.name]
    assert asked == [None, "bytes=5000-"], srv.log
    assert any("timed out" in s and "retrying" in s for s in say), say


def test_a_zip_bomb_is_refused_naming_its_member(tmp_path):
    """Issue 21: zip expansion had no bound, so a custom package list could deliver a bomb.
    A member expanding beyond reason is refused before anything is written."""
    from avsc.data.download import unpack

    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(f"{TOP}/meta.csv", "filename\tscene_label\n")
        z.writestr(f"{TOP}/audio/zeros.wav", bytes(80 << 20))  # 80 MiB of zeros: ~80 kB
    with pytest.raises(DownloadError, match=r"member '.*/audio/zeros.wav' would expand from "
                       r"\d+ to 83886080 bytes \(\d+x\); refused as a zip bomb"):  # fmt: skip
        unpack(bomb, tmp_path / "root")
    assert not (tmp_path / "root").exists() or not list((tmp_path / "root").rglob("*.*"))


def test_download_timeout_is_an_option(tmp_path, capsys):
    from avsc.cli import build_parser

    base = ["download", "--dataset", "eval", "--out", str(tmp_path), "--timeout"]
    args = build_parser().parse_args([*base, "7.5"])
    assert args.timeout == 7.5
    with pytest.raises(SystemExit):
        build_parser().parse_args([*base, "0"])
    assert "--timeout: must be a positive number of seconds, got 0" in capsys.readouterr().err
