"""The official CIFAR-100 archive: download (progress bar, checksum), extraction and verification."""
from __future__ import annotations

import json
import os
import shutil
import socket
import tarfile
import tempfile
import threading
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Optional

from .formats import (
    _FILES,
    _STAMP,
    CIFAR100_FOLDER,
    CIFAR100_MD5,
    CIFAR100_TGZ,
    CIFAR100_URL,
    DataError,
    _load_folder,
    _official_md5,
)

# ---------------------------------------------------------------------------
# Checksums


def _md5(path: Path) -> str:
    from torchvision.datasets.utils import calculate_md5

    return calculate_md5(str(path))


def _hint(root: Path) -> str:
    return (f"run `cifar-tui data download` or place the official archive at {root / CIFAR100_TGZ}")


def _read_stamp(folder: Path) -> dict:
    try:
        obj = json.loads((folder / _STAMP).read_text())
        return obj if isinstance(obj, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_stamp(folder: Path, stamp: dict) -> None:
    tmp = folder / f"{_STAMP}.tmp-{os.getpid()}-{threading.get_ident()}"
    try:
        tmp.write_text(json.dumps(stamp, sort_keys=True))
        os.replace(tmp, folder / _STAMP)
    except OSError:  # a read-only data folder only costs a re-hash next time
        try:
            tmp.unlink()
        except OSError:
            pass


def _check_files(folder: Path, root: Path, expected: dict[str, str], use_stamp: bool) -> None:
    """md5 of each extracted file; the stamp skips files whose size+mtime+md5 were seen before."""
    stamp = _read_stamp(folder) if use_stamp else {}
    new_stamp = {}
    for name in _FILES:
        path = folder / name
        try:
            st = path.stat()
        except FileNotFoundError:
            raise DataError(f"{path}: file is missing; delete {folder} and {_hint(root)}") from None
        want = expected[name]
        seen = stamp.get(name)
        key = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "md5": want}
        if seen == key:
            new_stamp[name] = key
            continue
        got = _md5(path)
        if got != want:
            raise DataError(
                f"{path}: checksum mismatch (expected md5 {want}, got {got}); delete it and {_hint(root)}"
            )
        new_stamp[name] = key
    if new_stamp != stamp:
        _write_stamp(folder, new_stamp)


# ---------------------------------------------------------------------------
# Download / extract


def _check_archive_members(tgz: Path) -> None:
    try:
        with tarfile.open(tgz, "r:gz") as tar:
            for m in tar.getmembers():
                parts = Path(m.name).parts
                if (
                    not parts
                    or parts[0] != CIFAR100_FOLDER
                    or Path(m.name).is_absolute()
                    or ".." in parts
                    or not (m.isfile() or m.isdir())
                ):
                    raise DataError(f"{tgz}: unexpected archive member {m.name!r}; expected only {CIFAR100_FOLDER}/...")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"{tgz}: not a readable tar.gz ({exc}); delete it and run `cifar-tui data download`") from None


def _extract(tgz: Path, root: Path, expected: dict[str, str]) -> Path:
    """Extract into a temporary folder, check the files, then move into place."""
    from torchvision.datasets.utils import extract_archive

    _check_archive_members(tgz)
    folder = root / CIFAR100_FOLDER
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{CIFAR100_FOLDER}.extract-", dir=root))
    except OSError as exc:
        raise DataError(f"{root}: cannot extract here ({exc.strerror or exc})") from None
    try:
        try:
            extract_archive(str(tgz), str(tmp))
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise DataError(f"{tgz}: cannot extract ({exc}); delete it and run `cifar-tui data download`") from None
        got = tmp / CIFAR100_FOLDER
        for name in _FILES:
            if not (got / name).is_file():
                raise DataError(
                    f"{tgz}: archive has no {CIFAR100_FOLDER}/{name}; delete it and run `cifar-tui data download`"
                )
        try:
            _check_files(got, root, expected, use_stamp=False)
        except DataError as exc:
            raise DataError(f"{tgz}: extracted files do not match ({exc})") from None
        if folder.exists() and _folder_ok(folder, root, expected):
            return folder  # another process (a DDP rank) extracted it meanwhile
        shutil.rmtree(folder, ignore_errors=True)
        try:
            os.replace(got, folder)
        except OSError:
            if not _folder_ok(folder, root, expected):
                raise DataError(f"{folder}: cannot move the extracted files into place; delete it and retry") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _folder_ok(folder: Path, root: Path, expected: dict[str, str]) -> bool:
    try:
        _check_files(folder, root, expected, use_stamp=True)
        return True
    except DataError:
        return False


def _tgz_ok(tgz: Path, md5: str) -> bool:
    from torchvision.datasets.utils import check_integrity

    return check_integrity(str(tgz), md5)


_DOWNLOAD_LOCK = threading.Lock()


def _resolve_host(url: str, timeout: float) -> None:
    """DNS is not covered by socket timeouts: resolve in a thread and give up after ``timeout``."""
    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    if not host:
        raise OSError("no host in URL")
    result: dict[str, BaseException] = {}

    def lookup() -> None:
        try:
            socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except BaseException as exc:  # noqa: BLE001 - reported to the caller
            result["error"] = exc

    t = threading.Thread(target=lookup, daemon=True, name="cifar-tui-dns")
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise OSError(f"name lookup for {host} timed out after {timeout:g} s")
    if "error" in result:
        raise OSError(f"name lookup for {host} failed: {result['error']}")


def _fetch(url: str, dest: Path, progress: bool, timeout: float) -> None:
    """Copy ``url`` to ``dest`` (file:// by copy; http(s) through torchvision's download_url)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "file":
        src = Path(urllib.request.url2pathname(parts.path))
        shutil.copyfile(src, dest)
        return
    if parts.scheme not in ("http", "https"):
        raise OSError(f"unsupported URL scheme {parts.scheme!r}")
    import torchvision.datasets.utils as tvu

    _resolve_host(url, timeout)
    with _DOWNLOAD_LOCK:
        old_timeout = socket.getdefaulttimeout()
        old_tqdm = tvu.tqdm
        socket.setdefaulttimeout(timeout)  # download_url has no timeout argument
        if not progress:
            tvu.tqdm = _SilentTqdm  # download_url always draws a tqdm bar (to stderr)
        try:
            tvu.download_url(url, str(dest.parent), filename=dest.name, md5=None)
        finally:
            socket.setdefaulttimeout(old_timeout)
            tvu.tqdm = old_tqdm


class _SilentTqdm:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __enter__(self) -> "_SilentTqdm":
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def update(self, n: int = 1) -> None:
        pass


def _one_line(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    text = str(reason if reason is not None else exc) or type(exc).__name__
    return " ".join(text.split())


def download_cifar100(
    root: Path,
    url: str = CIFAR100_URL,
    md5: str = CIFAR100_MD5,
    progress: bool = True,
    timeout: float = 10.0,
    *,
    expected_md5: Optional[dict[str, str]] = None,
) -> Path:
    """Make ``root/cifar-100-python`` hold verified ``train``/``test``/``meta``; return that folder.

    Nothing is downloaded when the folder already verifies, or when a verified
    ``root/cifar-100-python.tar.gz`` is there (it is just extracted).  The download
    goes to ``<archive>.part`` and only replaces the archive once its md5 matches.
    ``expected_md5`` (tests) overrides the official md5s of the extracted files.
    """
    root = Path(root)
    expected = dict(expected_md5) if expected_md5 else _official_md5()
    folder = root / CIFAR100_FOLDER
    tgz = root / CIFAR100_TGZ
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"{root}: cannot create the data folder ({exc.strerror or exc})") from None
    if folder.is_dir():
        try:
            _check_files(folder, root, expected, use_stamp=True)
            return folder
        except DataError:
            pass  # re-extract (or re-download) below; the folder is replaced only by a verified one
    if not (tgz.is_file() and _tgz_ok(tgz, md5)):
        part = tgz.with_name(tgz.name + ".part")
        try:
            _fetch(url, part, progress, timeout)
        except Exception as exc:  # noqa: BLE001 - any failure is a one-line DataError
            _unlink(part)
            raise DataError(
                f"cannot download {url} ({_one_line(exc)}); place {CIFAR100_TGZ} "
                f"(or the extracted {CIFAR100_FOLDER}/ folder) in {root} by hand"
            ) from None
        if not _tgz_ok(part, md5):
            got = _md5(part) if part.is_file() else "nothing"
            _unlink(part)
            raise DataError(
                f"{url}: downloaded file has md5 {got}, expected {md5}; try again later or place "
                f"{CIFAR100_TGZ} (or the extracted {CIFAR100_FOLDER}/ folder) in {root} by hand"
            )
        os.replace(part, tgz)
    return _extract(tgz, root, expected)


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def _ensure_cifar100(root: Path, verify: bool, expected_md5: Optional[dict[str, str]]) -> Path:
    folder = root / CIFAR100_FOLDER
    tgz = root / CIFAR100_TGZ
    expected = dict(expected_md5) if expected_md5 else _official_md5()
    if not folder.is_dir():
        if not tgz.is_file():
            raise DataError(
                f"{folder}: CIFAR-100 not found; run `cifar-tui data download` (or `--data synthetic` to try "
                f"without it), or place the official archive at {tgz}"
            )
        # the archive md5 is official unless the caller passes its own (key "cifar-100-python.tar.gz");
        # with custom md5s only the extracted files are checked
        tgz_md5 = expected.get(CIFAR100_TGZ) if expected_md5 else CIFAR100_MD5
        if tgz_md5 and not _tgz_ok(tgz, tgz_md5):
            raise DataError(
                f"{tgz}: checksum mismatch (expected md5 {tgz_md5}, got {_md5(tgz)}); delete it and "
                f"run `cifar-tui data download`"
            )
        _extract(tgz, root, expected)
    elif verify:
        _check_files(folder, root, expected, use_stamp=True)
    return folder


def verify_cifar100(root: Path, expected_md5: Optional[dict[str, str]] = None) -> dict:
    """Re-hash ``root/cifar-100-python/{train,test,meta}`` and read them.

    Returns ``{"train": 50000, "test": 10000, "classes": 100}`` (the counts found).
    A missing folder is extracted from a verified archive when one is present."""
    root = Path(root)
    folder = _ensure_cifar100(root, verify=False, expected_md5=expected_md5)
    expected = dict(expected_md5) if expected_md5 else _official_md5()
    _check_files(folder, root, expected, use_stamp=False)
    ds = _load_folder(folder, "cifar100", f"delete {folder} and {_hint(root)}")
    return {"train": len(ds.train), "test": len(ds.test), "classes": len(ds.classes)}
