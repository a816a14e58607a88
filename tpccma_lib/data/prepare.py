"""Download, verify and unpack the real data sets (``tpccma prepare coco cifar10``).

A registry names, for each data set, the files to fetch: URL, file name, checksum and
whether to unpack it. :func:`prepare` fetches only what is missing, into a ``.part`` file
that becomes the real file (an atomic rename) only once its checksum matches, and unpacks
archives through a temporary folder so that a half-unpacked archive never looks prepared.

Everything lands in ``data_root() / name``: ``$TPCCMA_DATA`` if set, else the repository's
``data/`` folder (``./data`` when the package is installed elsewhere). One layout serves both
ends: ``tpccma prepare coco cifar10 --root R`` writes ``R/coco`` and ``R/cifar10``, and a run
with ``DataConfig(root=R)`` (notebook parameter ``root``) reads them from there
(:func:`dataset_dir`)::

    R/coco/dataset_coco.json   R/coco/train2014/   R/coco/val2014/
    R/cifar10/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import urllib.request
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tpccma_lib.data.base import DataSetError

__all__ = [
    "DATASETS",
    "Downloader",
    "PrepareError",
    "RemoteFile",
    "data_root",
    "dataset_dir",
    "file_checksum",
    "is_prepared",
    "prepare",
    "prepare_files",
    "urllib_downloader",
]

# downloader(url, destination): write the bytes at ``url`` to the file ``destination``.
Downloader = Callable[[str, Path], None]


class PrepareError(DataSetError):
    """A data set could not be downloaded, verified or unpacked; says what to do by hand."""


@dataclass(frozen=True)
class RemoteFile:
    """One file of a data set.

    Attributes:
        url: where to download it from.
        filename: its name in the data set's folder.
        checksum: ``"md5:<hex>"`` or ``"sha256:<hex>"``, or None when none is published.
        extract: unpack it (zip, tar, tar.gz) into the data set's folder.
        provides: the path (relative to the data set's folder) that exists once this file
            is in place: the unpacked top-level folder or file, or ``filename`` itself.
    """

    url: str
    filename: str
    checksum: str | None
    extract: bool
    provides: str


DATASETS: dict[str, tuple[RemoteFile, ...]] = {
    "cifar10": (
        RemoteFile(
            url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
            filename="cifar-10-python.tar.gz",
            checksum="md5:c58f30108f718f92721af3b95e74349a",
            extract=True,
            provides="cifar-10-batches-py",
        ),
    ),
    "coco": (
        RemoteFile(
            url="https://cs.stanford.edu/people/karpathy/deepimagesent/caption_datasets.zip",
            filename="caption_datasets.zip",
            checksum=None,
            extract=True,
            provides="dataset_coco.json",
        ),
        RemoteFile(
            url="http://images.cocodataset.org/zips/val2014.zip",
            filename="val2014.zip",
            checksum="md5:a3d79f5ed8d289b7a7554ce06a5782b3",
            extract=True,
            provides="val2014",
        ),
        RemoteFile(
            url="http://images.cocodataset.org/zips/train2014.zip",
            filename="train2014.zip",
            checksum="md5:0da8c0bd3d6becc4dcb32757491aca88",
            extract=True,
            provides="train2014",
        ),
    ),
}

_CHUNK = 1 << 20  # 1 MiB


def data_root() -> Path:
    """Where data sets live: ``$TPCCMA_DATA``, else ``<repo>/data``, else ``./data``."""
    if os.environ.get("TPCCMA_DATA"):
        return Path(os.environ["TPCCMA_DATA"]).expanduser()
    repo = Path(__file__).resolve().parents[2]
    if (repo / "pyproject.toml").is_file():
        return repo / "data"
    return Path.cwd() / "data"


def dataset_dir(name: str, root: str | Path | None = None) -> Path:
    """Folder of data set ``name`` ("coco" or "cifar10") under ``root`` (default
    :func:`data_root`): ``root / name``, where ``tpccma prepare --root root`` puts it.

    A ``root`` that is itself the data set's folder (it holds ``dataset_coco.json``, or
    ``batches.meta`` / ``cifar-10-batches-py``) is accepted as such.
    """
    base = Path(root).expanduser() if root is not None else data_root()
    own = {"coco": ("dataset_coco.json",), "cifar10": ("batches.meta", "cifar-10-batches-py")}
    if not (base / name).exists() and any((base / f).exists() for f in own.get(name, ())):
        return base
    return base / name


def file_checksum(path: Path, algorithm: str) -> str:
    """Hex digest of a file, read in 1 MiB chunks. algorithm: "md5" or "sha256"."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _checksum_matches(path: Path, checksum: str | None) -> tuple[bool, str]:
    """(matches, actual "algo:hex"); always True when no checksum is published."""
    if checksum is None:
        return True, ""
    algorithm, _, expected = checksum.partition(":")
    if algorithm not in ("md5", "sha256") or not expected:
        raise PrepareError(f"bad checksum {checksum!r}: write it as 'md5:<hex>' or 'sha256:<hex>'.")
    actual = file_checksum(path, algorithm)
    return actual == expected.lower(), f"{algorithm}:{actual}"


def urllib_downloader(url: str, destination: Path) -> None:
    """Stream ``url`` (http, https or file) into ``destination`` with a tqdm progress bar."""
    from tqdm.auto import tqdm

    with urllib.request.urlopen(url, timeout=60) as response:
        total = int(response.headers.get("Content-Length") or 0) or None
        with (
            open(destination, "wb") as handle,
            tqdm(total=total, unit="B", unit_scale=True, desc=destination.name) as bar,
        ):
            while chunk := response.read(_CHUNK):
                handle.write(chunk)
                bar.update(len(chunk))


def _manual_instructions(remote: RemoteFile, folder: Path, name: str) -> str:
    return (
        f"If this machine is offline, download {remote.url} on one with internet access, "
        f"put it in {folder} as {remote.filename}, and run `tpccma prepare {name}` again "
        "(it verifies and unpacks files already there)."
    )


def _download(remote: RemoteFile, folder: Path, name: str, downloader: Downloader) -> Path:
    """Fetch one file to ``folder/filename`` via a verified ``.part`` file."""
    final = folder / remote.filename
    part = folder / (remote.filename + ".part")
    part.unlink(missing_ok=True)
    try:
        downloader(remote.url, part)
    except Exception as error:
        part.unlink(missing_ok=True)
        raise PrepareError(
            f"Could not download {remote.url}: {error}. {_manual_instructions(remote, folder, name)}"
        ) from error
    if not part.is_file():
        raise PrepareError(f"The downloader wrote nothing for {remote.url} (expected {part}).")
    matches, actual = _checksum_matches(part, remote.checksum)
    if not matches:
        part.unlink()
        raise PrepareError(
            f"Checksum mismatch for {remote.url}: expected {remote.checksum}, got {actual}; "
            f"the download was deleted. Try again, or {_manual_instructions(remote, folder, name)}"
        )
    os.replace(part, final)
    return final


def _check_member(name: str, destination: Path) -> None:
    target = (destination / name).resolve()
    if not target.is_relative_to(destination.resolve()):
        raise PrepareError(f"Refusing to unpack {name!r}: it would land outside {destination}.")


def _unpack(archive: Path, destination: Path) -> None:
    """Unpack a zip or tar(.gz) archive into ``destination`` (members stay inside it)."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as bundle:
            for member in bundle.namelist():
                _check_member(member, destination)
            bundle.extractall(destination)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as bundle:
            for member in bundle.getmembers():
                _check_member(member.name, destination)
                if member.issym() or member.islnk():
                    raise PrepareError(f"Refusing to unpack link {member.name!r} in {archive}.")
            if hasattr(tarfile, "data_filter"):  # Python >= 3.10.12 / 3.11.4
                bundle.extractall(destination, filter="data")
            else:
                bundle.extractall(destination)
    else:
        raise PrepareError(f"{archive} is neither a zip nor a tar archive; delete it and retry.")


def _extract(archive: Path, remote: RemoteFile, folder: Path) -> None:
    """Unpack via a temporary folder; ``remote.provides`` appears last, once all is in place."""
    staging = folder / f".unpacking-{remote.filename}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        _unpack(archive, staging)
        top = staging
        wrappers = list(staging.iterdir())
        if len(wrappers) == 1 and (wrappers[0] / remote.provides).exists():
            top = wrappers[0]  # the archive wraps everything in one folder
        if not (top / remote.provides).exists():
            raise PrepareError(
                f"{archive} did not contain {remote.provides}; delete it and run prepare again."
            )
        entries = sorted(top.iterdir(), key=lambda p: p.name == remote.provides)
        for entry in entries:
            target = folder / entry.name
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(entry, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def prepare_files(
    files: Sequence[RemoteFile],
    folder: Path,
    name: str = "",
    downloader: Downloader | None = None,
    keep_archives: bool = False,
) -> Path:
    """Make every ``RemoteFile`` present in ``folder``: download, verify, unpack.

    A file whose ``provides`` already exists is skipped; an archive already in ``folder``
    (downloaded earlier or put there by hand) is verified and unpacked, not downloaded.

    Raises:
        PrepareError: a download failed or a checksum did not match; the message names
            the URL and the folder where the file can be put by hand.
    """
    downloader = downloader or urllib_downloader
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for remote in files:
        if (folder / remote.provides).exists():
            continue
        archive = folder / remote.filename
        if archive.is_file():
            matches, actual = _checksum_matches(archive, remote.checksum)
            if not matches:
                raise PrepareError(
                    f"{archive} does not match its checksum (expected {remote.checksum}, got "
                    f"{actual}). Delete it and run `tpccma prepare {name}` again."
                )
        else:
            archive = _download(remote, folder, name, downloader)
        if remote.extract:
            _extract(archive, remote, folder)
            if not keep_archives:
                archive.unlink()
    return folder


def _registry_entry(name: str) -> tuple[RemoteFile, ...]:
    if name not in DATASETS:
        raise PrepareError(f"unknown data set {name!r}; choose one of {tuple(DATASETS)}.")
    return DATASETS[name]


def prepare(
    name: str,
    root: str | Path | None = None,
    downloader: Downloader | None = None,
    keep_archives: bool = False,
) -> Path:
    """Download (only what is missing), verify and unpack data set ``name``.

    Args:
        name: a key of :data:`DATASETS` ("coco" or "cifar10").
        root: parent folder; the data set goes to ``root / name``. Default :func:`data_root`.
        downloader: ``downloader(url, destination)``; default :func:`urllib_downloader`.
            Tests pass one that copies a local file.
        keep_archives: keep the downloaded archives after unpacking.

    Returns:
        The data set's folder, ready for ``load_coco_karpathy`` / ``load_cifar10``.
    """
    files = _registry_entry(name)
    folder = Path(root if root is not None else data_root()) / name
    return prepare_files(files, folder, name, downloader, keep_archives)


def is_prepared(name: str, root: str | Path | None = None) -> bool:
    """True when every file of data set ``name`` is in place under ``root / name``."""
    folder = Path(root if root is not None else data_root()) / name
    return all((folder / remote.provides).exists() for remote in _registry_entry(name))
