"""`hvdbench data cifar10 --dest DIR`: fetch, check and unpack the CIFAR-10 binary archive.

The archive is streamed to a temporary file beside the destination while its MD5 is
computed; a short read (fewer bytes than Content-Length) or a wrong checksum is an error.
It is then unpacked into a temporary directory, the batches are checked against the
CIFAR-10 layout, and only then is ``cifar-10-batches-bin`` renamed into place, in one step.
Whatever fails, the temporary file and directory are removed: nothing half-extracted is
ever left where a run would read it.

Under a launcher, only the chief downloads; the other ranks wait for its outcome (a
Horovod broadcast), as in the classic distributed CIFAR-10 example.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from hvdbench.data import layout
from hvdbench.errors import DownloadError, UsageError

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
CIFAR10_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"  # published with the data set
CHUNK = 1 << 20


def is_complete(directory: Path) -> bool:
    """All five training batches and the test batch are present and well-formed."""
    try:
        train = layout.cifar10_files(str(directory), training=True)
        layout.cifar10_files(str(directory), training=False)
    except UsageError:
        return False
    return len(train.paths) == len(layout.CIFAR10_TRAIN)


def fetch(url: str, target: Path, timeout: float) -> str:
    """Stream ``url`` into ``target``; return the MD5. Raises DownloadError when short."""
    md5 = hashlib.md5()
    received = 0
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(target, "wb") as out:
            expected = resp.headers.get("Content-Length")
            while True:
                chunk = resp.read(CHUNK)
                if not chunk:
                    break
                out.write(chunk)
                md5.update(chunk)
                received += len(chunk)
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
        raise DownloadError(f"download of {url} failed after {received} bytes: {e}") from None
    if expected is not None and received != int(expected):
        raise DownloadError(
            f"partial download of {url}: {received} of {expected} bytes; nothing was extracted"
        )
    return md5.hexdigest()


def _members(tar: tarfile.TarFile) -> list[tarfile.TarInfo]:
    """Regular files under cifar-10-batches-bin/, refusing any path that leaves it."""
    chosen = []
    for m in tar.getmembers():
        parts = Path(m.name).parts
        if (
            not parts
            or parts[0] != layout.CIFAR10_SUBDIR
            or ".." in parts
            or m.name.startswith("/")
        ):
            raise DownloadError(f"unexpected path {m.name!r} in the archive; nothing was extracted")
        if m.isfile():
            chosen.append(m)
    return chosen


def cifar10(dest: str, url: str = CIFAR10_URL, md5: str = CIFAR10_MD5, timeout: float = 60) -> Path:
    """Make ``dest/cifar-10-batches-bin`` hold the checked CIFAR-10 binary batches."""
    root = Path(dest)
    final = root / layout.CIFAR10_SUBDIR
    if is_complete(final):
        return final
    if final.exists():
        raise DownloadError(
            f"{final} exists but is incomplete or malformed; remove it and run again"
        )
    root.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".cifar-10-binary.", suffix=".part", dir=root)
    os.close(fd)
    archive = Path(tmp_name)
    staging = Path(tempfile.mkdtemp(prefix=".cifar-10-extract.", dir=root))
    try:
        got = fetch(url, archive, timeout)
        if got != md5.lower():
            raise DownloadError(
                f"checksum mismatch for {url}: MD5 {got}, expected {md5.lower()} "
                "(corrupt or different file); nothing was extracted"
            )
        try:
            with tarfile.open(archive, "r:gz") as tar:
                tar.extractall(staging, members=_members(tar))
        except (tarfile.TarError, OSError, EOFError) as e:
            raise DownloadError(f"{url} is not a readable .tar.gz archive: {e}") from None
        if not is_complete(staging / layout.CIFAR10_SUBDIR):
            raise DownloadError(
                f"{url} does not hold the CIFAR-10 binary batches "
                f"({', '.join(layout.CIFAR10_TRAIN + layout.CIFAR10_EVAL)} under "
                f"{layout.CIFAR10_SUBDIR}/); nothing was extracted"
            )
        os.rename(staging / layout.CIFAR10_SUBDIR, final)  # one step: all or nothing
    finally:
        archive.unlink(missing_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
    return final


def cifar10_distributed(
    dest: str, url: str, md5: str, timeout: float, rank: int, size: int
) -> Path:
    """The chief downloads; the other ranks wait for its outcome and share it."""
    if size <= 1:
        return cifar10(dest, url, md5, timeout)
    import horovod.tensorflow as hvd

    hvd.init()
    try:
        error = ""
        if hvd.rank() == 0:
            try:
                cifar10(dest, url, md5, timeout)
            except DownloadError as e:
                error = str(e)
        error = hvd.broadcast_object(error, root_rank=0)
    finally:
        hvd.shutdown()
    if error:
        raise DownloadError(error if rank == 0 else f"the chief's download failed: {error}")
    return Path(dest) / layout.CIFAR10_SUBDIR
