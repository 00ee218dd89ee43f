"""`hvdbench data cifar10` against an HTTP server on loopback serving a generated archive:
good, corrupt (checksum), partial (short body), and not an archive. A failure leaves
nothing behind: no partial file, no half-extracted directory."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from hvdbench.data import download, layout
from tests import datagen
from tests.conftest import hvdbench


class Server:
    """Serves ``routes[path] = (body, declared_length)``; a short body then a close
    simulates a dropped connection."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[bytes, int]] = {}
        routes = self.routes

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                if self.path not in routes:
                    self.send_error(404)
                    return
                body, length = routes[self.path]
                self.send_response(200)
                self.send_header("Content-Length", str(length))
                self.end_headers()
                self.wfile.write(body)
                self.close_connection = True

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.close()


@pytest.fixture
def archive(tmp_path) -> tuple[bytes, str]:
    path = tmp_path / "cifar-10-binary.tar.gz"
    md5 = datagen.cifar10_archive(path)
    return path.read_bytes(), md5


def leftovers(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.iterdir()) if dest.exists() else []


def test_good_download_extracts_checked_batches(tmp_path, server, archive):
    body, md5 = archive
    server.routes["/c.tgz"] = (body, len(body))
    dest = tmp_path / "dest"
    out = download.cifar10(str(dest), server.url("/c.tgz"), md5, timeout=10)
    assert out == dest / "cifar-10-batches-bin"
    assert leftovers(dest) == ["cifar-10-batches-bin"]  # no .part, no staging dir
    assert layout.cifar10_files(str(dest), training=True).num_examples == 5 * 8
    # a second call finds the data complete and does not download again
    server.routes.clear()
    assert download.cifar10(str(dest), server.url("/c.tgz"), md5, timeout=10) == out


@pytest.mark.parametrize(
    "case, match",
    [
        ("checksum", r"checksum mismatch .* MD5 [0-9a-f]{32}, expected"),
        ("partial", r"partial download of .*: \d+ of \d+ bytes|failed after \d+ bytes"),
        ("not_archive", r"not a readable .tar.gz archive"),
        ("wrong_content", r"does not hold the CIFAR-10 binary batches"),
        ("missing", r"download of .* failed after 0 bytes: HTTP Error 404"),
    ],
)
def test_bad_downloads_leave_nothing(tmp_path, server, archive, case, match):
    import hashlib
    import io
    import tarfile

    body, md5 = archive
    if case == "checksum":
        bad = bytearray(body)
        bad[len(bad) // 2] ^= 0xFF
        server.routes["/c.tgz"] = (bytes(bad), len(bad))
    elif case == "partial":
        server.routes["/c.tgz"] = (body[: len(body) // 2], len(body))
    elif case == "not_archive":
        body = b"<html>not found</html>"
        md5 = hashlib.md5(body).hexdigest()
        server.routes["/c.tgz"] = (body, len(body))
    elif case == "wrong_content":
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            info = tarfile.TarInfo("cifar-10-batches-bin/data_batch_1.bin")
            info.size = 10
            tar.addfile(info, io.BytesIO(b"0123456789"))
        body = buf.getvalue()
        md5 = hashlib.md5(body).hexdigest()
        server.routes["/c.tgz"] = (body, len(body))
    dest = tmp_path / "dest"
    with pytest.raises(download.DownloadError, match=match):
        download.cifar10(str(dest), server.url("/c.tgz"), md5, timeout=10)
    assert leftovers(dest) == []


def test_cli_good_and_corrupt(tmp_path, server, archive):
    body, md5 = archive
    server.routes["/good"] = (body, len(body))
    server.routes["/short"] = (body[:100], len(body))
    ok = hvdbench(
        "data",
        "cifar10",
        "--dest",
        str(tmp_path / "a"),
        "--url",
        server.url("/good"),
        "--md5",
        md5,
        timeout=60,
    )
    assert ok.returncode == 0, ok.output
    assert "ready in" in ok.stdout
    bad = hvdbench(
        "data",
        "cifar10",
        "--dest",
        str(tmp_path / "b"),
        "--url",
        server.url("/short"),
        "--md5",
        md5,
        "--timeout",
        "5",
        timeout=60,
    )
    assert bad.returncode == 1
    assert bad.stderr.count("\n") == 1 and bad.stderr.startswith("hvdbench: error: ")
    assert leftovers(tmp_path / "b") == []
    # the default checksum is the official archive's: a generated archive fails it
    other = hvdbench(
        "data",
        "cifar10",
        "--dest",
        str(tmp_path / "c"),
        "--url",
        server.url("/good"),
        timeout=60,
    )
    assert other.returncode == 1 and download.CIFAR10_MD5 in other.stderr
