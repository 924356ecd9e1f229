"""engine.data: the CIFAR-100 archive (tiny, in the exact pickle format), download over
loopback, the synthetic set, and the batch pipelines on CPU."""
from __future__ import annotations

import functools
import hashlib
import http.server
import io
import os
import pickle
import shutil
import socket
import struct
import tarfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from engine import data as D
from engine.config import DataConfig

N_TRAIN, N_TEST = 60, 20
CLASS_NAMES = ["apple", "aquarium_fish", "baby"] + [f"fine_{i:03d}" for i in range(3, 100)]


# ---------------------------------------------------------------------------
# A tiny archive in the exact CIFAR-100 format.  The official files were written by
# Python 2's cPickle with protocol 2: every string is a py2 `str` (BINSTRING, read back
# as bytes with encoding='bytes') and arrays reference numpy.core.multiarray.


class _Py2Pickler(pickle._Pickler):
    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2_str(self, obj):
        if isinstance(obj, str):
            obj = obj.encode("latin-1")
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str
    dispatch[str] = _save_py2_str

    def save_global(self, obj, name=None):
        module = obj.__module__
        name = name or obj.__qualname__
        if module in ("numpy", "numpy._core.multiarray", "numpy.core.multiarray") and name == "_reconstruct":
            module = "numpy.core.multiarray"
        if module.startswith("numpy._core"):
            module = "numpy.core" + module[len("numpy._core"):]
        self.write(pickle.GLOBAL + module.encode() + b"\n" + name.encode() + b"\n")
        self.memoize(obj)

    dispatch[type] = save_global


def py2_pickle(obj) -> bytes:
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@dataclass
class Tiny:
    tgz: Path
    md5: dict  # train/test/meta md5s of the extracted files
    tgz_md5: str
    train: np.ndarray  # (N, 3072)
    train_labels: list
    test: np.ndarray
    test_labels: list


def _split_obj(data: np.ndarray, labels: list, name: str) -> dict:
    return {
        b"filenames": [f"{name}_{i}.png".encode() for i in range(len(labels))],
        b"batch_label": f"{name} batch 1 of 1".encode(),
        b"fine_labels": labels,
        b"coarse_labels": [v // 5 for v in labels],
        b"data": data,
    }


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Tiny:
    base = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(1)
    train = rng.integers(0, 256, (N_TRAIN, 3072), dtype=np.uint8)
    test = rng.integers(0, 256, (N_TEST, 3072), dtype=np.uint8)
    # known pixels: image 0, red (0, 0) = 7; green at row 5, col 3 = 200; blue at row 31, col 30 = 99
    train[0, 0] = 7
    train[0, 1024 + 5 * 32 + 3] = 200
    train[0, 2048 + 31 * 32 + 30] = 99
    train_labels = [int(v) for v in rng.integers(0, 100, N_TRAIN)]
    test_labels = [int(v) for v in rng.integers(0, 100, N_TEST)]
    train_labels[0] = 42
    folder = base / "src" / "cifar-100-python"
    folder.mkdir(parents=True)
    (folder / "train").write_bytes(py2_pickle(_split_obj(train, train_labels, "train")))
    (folder / "test").write_bytes(py2_pickle(_split_obj(test, test_labels, "test")))
    meta = {
        b"fine_label_names": CLASS_NAMES,
        b"coarse_label_names": [f"coarse_{i}" for i in range(20)],
    }
    (folder / "meta").write_bytes(py2_pickle(meta))
    tgz = base / "cifar-100-python.tar.gz"
    with tarfile.open(tgz, "w:gz") as tar:
        tar.add(folder, arcname="cifar-100-python")
    md5 = {name: md5_of(folder / name) for name in ("train", "test", "meta")}
    return Tiny(tgz, md5, md5_of(tgz), train, train_labels, test, test_labels)


@pytest.fixture
def root(tmp_path, tiny) -> Path:
    """A data root holding the tiny archive (not yet extracted)."""
    r = tmp_path / "data"
    r.mkdir()
    shutil.copy(tiny.tgz, r / "cifar-100-python.tar.gz")
    return r


def cifar_cfg(**kw) -> DataConfig:
    return DataConfig(source="cifar100", **kw)


def one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and msg
    return msg


# ---------------------------------------------------------------------------
# CIFAR-100 archive


def test_tiny_pickles_are_like_the_original(tiny, tmp_path):
    with tarfile.open(tiny.tgz) as tar:
        names = sorted(tar.getnames())
        raw = tar.extractfile("cifar-100-python/train").read()
    assert names == ["cifar-100-python", "cifar-100-python/meta", "cifar-100-python/test", "cifar-100-python/train"]
    assert raw[:2] == b"\x80\x02" and b"cnumpy.core.multiarray\n_reconstruct\n" in raw
    obj = pickle.loads(raw, encoding="bytes")  # how the seed reads it
    assert set(obj) == {b"filenames", b"batch_label", b"fine_labels", b"coarse_labels", b"data"}
    assert obj[b"data"].shape == (N_TRAIN, 3072) and obj[b"data"].dtype == np.uint8


def test_load_tiny_archive(root, tiny):
    ds = D.load_dataset(cifar_cfg(), root, expected_md5=tiny.md5)
    assert (root / "cifar-100-python" / "train").is_file()  # extracted from the .tar.gz
    assert ds.source == "cifar100"
    assert ds.classes == CLASS_NAMES
    tr, te = ds.train, ds.test
    assert tr.images.shape == (N_TRAIN, 3, 32, 32) and tr.images.dtype == np.uint8 and tr.images.flags.c_contiguous
    assert te.images.shape == (N_TEST, 3, 32, 32)
    assert tr.labels.dtype == np.int64 and tr.labels.tolist() == tiny.train_labels
    assert te.labels.tolist() == tiny.test_labels
    assert tr.images[0, 0, 0, 0] == 7 and tr.images[0, 1, 5, 3] == 200 and tr.images[0, 2, 31, 30] == 99
    np.testing.assert_array_equal(tr.images.reshape(N_TRAIN, -1), tiny.train)
    np.testing.assert_array_equal(te.images.reshape(N_TEST, -1), tiny.test)
    assert tr.labels[0] == 42 and ds.classes[42] == "fine_042"


def test_limits_and_cfg_root(root, tiny, tmp_path):
    cfg = cifar_cfg(root=str(root), train_limit=10, test_limit=5)
    ds = D.load_dataset(cfg, tmp_path / "elsewhere", expected_md5=tiny.md5)  # cfg.root wins
    assert len(ds.train) == 10 and len(ds.test) == 5
    assert ds.train.labels.tolist() == tiny.train_labels[:10]
    np.testing.assert_array_equal(ds.test.images.reshape(5, -1), tiny.test[:5])
    big = D.load_dataset(cifar_cfg(train_limit=10**6), root, expected_md5=tiny.md5)
    assert len(big.train) == N_TRAIN


def test_verified_stamp_skips_rehash_until_file_changes(root, tiny, monkeypatch):
    D.load_dataset(cifar_cfg(), root, expected_md5=tiny.md5)
    assert (root / "cifar-100-python" / ".verified").is_file()
    calls = []
    real = D.archive._md5
    monkeypatch.setattr(D.archive, "_md5", lambda p: calls.append(Path(p).name) or real(p))
    D.load_dataset(cifar_cfg(), root, expected_md5=tiny.md5)
    assert calls == []
    train = root / "cifar-100-python" / "train"
    st = train.stat()
    os.utime(train, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    D.load_dataset(cifar_cfg(), root, expected_md5=tiny.md5)
    assert calls == ["train"]


def test_checksum_mismatch_names_the_file(root, tiny):
    D.load_dataset(cifar_cfg(), root, expected_md5=tiny.md5)
    train = root / "cifar-100-python" / "train"
    raw = bytearray(train.read_bytes())
    raw[-100] ^= 0xFF
    train.write_bytes(bytes(raw))
    with pytest.raises(D.DataError) as exc:
        D.load_dataset(cifar_cfg(), root, expected_md5=tiny.md5)
    msg = one_line(exc)
    assert str(train) in msg and "checksum mismatch" in msg and tiny.md5["train"] in msg
    assert "cifar-tui data download" in msg
    with pytest.raises(D.DataError, match="checksum mismatch"):
        D.verify_cifar100(root, expected_md5=tiny.md5)


def test_official_md5s_reject_the_tiny_files(root, tiny):
    D.load_dataset(cifar_cfg(), root, expected_md5=tiny.md5)
    with pytest.raises(D.DataError) as exc:
        D.verify_cifar100(root)
    assert "cifar-100-python" in one_line(exc) and "checksum mismatch" in str(exc.value)


def test_concurrent_first_loads_extract_once(root, tiny):
    """DDP ranks start together: all of them load while the archive is still unextracted."""
    results, errors = [], []

    def load():
        try:
            results.append(D.load_dataset(cifar_cfg(), root, expected_md5=tiny.md5))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=load) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(results) == 3
    assert all(r.train.labels.tolist() == tiny.train_labels for r in results)
    assert sorted(p.name for p in root.iterdir()) == ["cifar-100-python", "cifar-100-python.tar.gz"]


def test_verify_counts(root, tiny):
    assert D.verify_cifar100(root, expected_md5=tiny.md5) == {"train": N_TRAIN, "test": N_TEST, "classes": 100}


@pytest.mark.parametrize("damage", ["truncate", "garble", "evil"])
def test_damaged_pickle_is_a_data_error(root, tiny, damage, tmp_path):
    D.load_dataset(cifar_cfg(), root, expected_md5=tiny.md5)
    test_file = root / "cifar-100-python" / "test"
    raw = test_file.read_bytes()
    marker = tmp_path / "pwned"
    if damage == "truncate":
        raw = raw[: len(raw) // 2]
    elif damage == "garble":
        raw = raw[:2] + bytes(range(256)) * 4
    else:  # a pickle that would run code: must be refused, not executed
        class Evil:
            def __reduce__(self):
                return (os.system, (f"touch {marker}",))

        raw = pickle.dumps({b"data": Evil()}, protocol=2)
    test_file.write_bytes(raw)
    with pytest.raises(D.DataError) as exc:
        D.load_dataset(cifar_cfg(), root, verify=False)  # reaches the pickle reader
    msg = one_line(exc)
    assert str(test_file) in msg
    if damage == "truncate":
        assert "truncated" in msg
    assert not marker.exists()
    with pytest.raises(D.DataError, match="checksum mismatch"):  # and verify=True stops it earlier
        D.load_dataset(cifar_cfg(), root, expected_md5=tiny.md5)


def test_wrong_content_is_a_data_error(root, tiny):
    D.load_dataset(cifar_cfg(), root, expected_md5=tiny.md5)
    train = root / "cifar-100-python" / "train"
    train.write_bytes(py2_pickle({b"data": np.zeros((3, 100), np.uint8), b"fine_labels": [0, 1, 2]}))
    with pytest.raises(D.DataError, match=r"expected \(N, 3072\) uint8"):
        D.load_dataset(cifar_cfg(), root, verify=False)


def test_missing_data_says_what_to_do(tmp_path):
    with pytest.raises(D.DataError) as exc:
        D.load_dataset(cifar_cfg(), tmp_path / "nothing")
    msg = one_line(exc)
    assert "cifar-tui data download" in msg and "cifar-100-python.tar.gz" in msg
    with pytest.raises(D.DataError, match="cifar-tui data download"):
        D.verify_cifar100(tmp_path / "nothing")


def test_missing_file_in_extracted_folder(root, tiny):
    D.load_dataset(cifar_cfg(), root, expected_md5=tiny.md5)
    (root / "cifar-100-python" / "meta").unlink()
    with pytest.raises(D.DataError) as exc:
        D.load_dataset(cifar_cfg(), root, expected_md5=tiny.md5)
    assert "meta" in one_line(exc) and "missing" in str(exc.value)


# ---------------------------------------------------------------------------
# Download over loopback


class _Quiet(http.server.SimpleHTTPRequestHandler):
    hits: list = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        type(self).hits.append(self.path)
        super().do_GET()


class _QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        pass  # torchvision's redirect probe closes its GET early: a broken pipe here is expected


@pytest.fixture
def server(tiny, tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    shutil.copy(tiny.tgz, served / "cifar-100-python.tar.gz")
    handler = type("H", (_Quiet,), {"hits": []})
    httpd = _QuietServer(("127.0.0.1", 0), functools.partial(handler, directory=str(served)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/cifar-100-python.tar.gz", handler.hits
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_download_over_loopback(server, tiny, tmp_path, capfd):
    url, hits = server
    root = tmp_path / "dl"
    folder = D.download_cifar100(root, url=url, md5=tiny.tgz_md5, progress=True, expected_md5=tiny.md5)
    assert folder == root / "cifar-100-python"
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == ["meta", "test", "train"]
    assert md5_of(root / "cifar-100-python.tar.gz") == tiny.tgz_md5
    assert not (root / "cifar-100-python.tar.gz.part").exists()
    assert [p for p in root.iterdir() if p.name.startswith(".")] == []  # no temp folders left
    assert capfd.readouterr().out == ""  # the progress bar goes to stderr
    n = len(hits)
    assert n >= 1
    # already present and verified: nothing downloaded
    assert D.download_cifar100(root, url=url, md5=tiny.tgz_md5, progress=False, expected_md5=tiny.md5) == folder
    assert len(hits) == n
    ds = D.load_dataset(cifar_cfg(), root, expected_md5=tiny.md5)
    assert ds.train.labels.tolist() == tiny.train_labels
    # a damaged extracted folder is replaced from the verified archive, still without downloading
    (folder / "test").write_bytes(b"junk")
    D.download_cifar100(root, url=url, md5=tiny.tgz_md5, progress=False, expected_md5=tiny.md5)
    assert md5_of(folder / "test") == tiny.md5["test"] and len(hits) == n


def test_download_wrong_md5_leaves_nothing(server, tmp_path):
    url, _ = server
    root = tmp_path / "dl"
    with pytest.raises(D.DataError) as exc:
        D.download_cifar100(root, url=url, md5="0" * 32, progress=False)
    msg = one_line(exc)
    assert "0" * 32 in msg and "md5" in msg
    assert not (root / "cifar-100-python").exists()
    assert list(root.iterdir()) == []


def test_download_unreachable_is_quick(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/cifar-100-python.tar.gz"
    timeout = 120.0  # long: the refusal must end it, not its timeout (relative to it, not to the machine's speed)
    t0 = time.monotonic()
    with pytest.raises(D.DataError) as exc:
        D.download_cifar100(tmp_path / "dl", url=url, progress=False, timeout=timeout)
    assert time.monotonic() - t0 < timeout / 2
    msg = one_line(exc)
    assert msg.startswith(f"cannot download {url} (") and "by hand" in msg and str(tmp_path / "dl") in msg
    assert list((tmp_path / "dl").iterdir()) == []


def test_download_unknown_host_is_quick(tmp_path):
    url = "http://cifar-tui-test.invalid/cifar-100-python.tar.gz"  # .invalid never resolves
    timeout = 120.0
    t0 = time.monotonic()
    with pytest.raises(D.DataError) as exc:
        D.download_cifar100(tmp_path / "dl", url=url, progress=False, timeout=timeout)
    assert time.monotonic() - t0 < timeout / 2
    assert one_line(exc).startswith(f"cannot download {url} (")


def test_download_file_url_and_archive_already_there(tiny, tmp_path):
    root = tmp_path / "dl"
    folder = D.download_cifar100(root, url=tiny.tgz.as_uri(), md5=tiny.tgz_md5, progress=False,
                                 expected_md5=tiny.md5)
    assert (folder / "train").is_file()
    shutil.rmtree(folder)
    # the archive is there and verified: no download needed (this URL could not be fetched)
    D.download_cifar100(root, url="http://127.0.0.1:9/none", md5=tiny.tgz_md5, progress=False,
                        expected_md5=tiny.md5)
    assert md5_of(folder / "meta") == tiny.md5["meta"]


def test_archive_with_unexpected_members_is_refused(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    with tarfile.open(root / "cifar-100-python.tar.gz", "w:gz") as tar:
        info = tarfile.TarInfo("../escape")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(D.DataError, match="unexpected archive member"):
        D.load_dataset(cifar_cfg(), root, expected_md5={"train": "", "test": "", "meta": ""})
    assert not (tmp_path / "escape").exists()


# ---------------------------------------------------------------------------
# Synthetic


def test_synthetic_full_shapes_and_determinism(tmp_path):
    cfg = DataConfig(source="synthetic")
    a = D.load_dataset(cfg, tmp_path)
    assert a.source == "synthetic" and a.classes == [f"class_{i:03d}" for i in range(100)]
    assert a.train.images.shape == (50000, 3, 32, 32) and a.test.images.shape == (10000, 3, 32, 32)
    assert a.train.images.dtype == np.uint8 and a.train.labels.dtype == np.int64
    assert a.train.images.flags.c_contiguous
    assert np.bincount(a.train.labels, minlength=100).tolist() == [500] * 100
    assert np.bincount(a.test.labels, minlength=100).tolist() == [100] * 100
    b = D.synthetic_dataset(0, 3000, 700)  # a prefix of the full set, bit for bit
    np.testing.assert_array_equal(a.train.images[:3000], b.train.images)
    np.testing.assert_array_equal(a.test.labels[:700], b.test.labels)


def test_synthetic_limits_deterministic_and_learnable(tmp_path):
    cfg = DataConfig(source="synthetic", train_limit=2000, test_limit=500)
    a = D.load_dataset(cfg, tmp_path)
    b = D.load_dataset(cfg, tmp_path)
    assert len(a.train) == 2000 and len(a.test) == 500
    np.testing.assert_array_equal(a.train.images, b.train.images)
    np.testing.assert_array_equal(a.test.labels, b.test.labels)
    assert set(a.train.labels.tolist()) == set(range(100))
    # a nearest-class-mean classifier is far above chance (1%) on the whole image ...
    x = a.train.images.reshape(2000, -1).astype(np.float32)
    means = np.stack([x[a.train.labels == c].mean(0) for c in range(100)])
    xt = a.test.images.reshape(500, -1).astype(np.float32)
    d = (xt ** 2).sum(1)[:, None] - 2 * xt @ means.T + (means ** 2).sum(1)[None]
    assert (d.argmin(1) == a.test.labels).mean() > 0.3
    # ... but not from any single pixel
    best = 0.0
    for p in range(0, 1024, 97):
        mp = means.reshape(100, 3, 1024)[:, :, p]
        dp = ((xt.reshape(500, 3, 1024)[:, None, :, p] - mp[None]) ** 2).sum(-1)
        best = max(best, (dp.argmin(1) == a.test.labels).mean())
    assert best < 0.35


def test_write_synthetic_round_trip(tmp_path):
    folder = D.write_synthetic(tmp_path, seed=3, n_train=300, n_test=100)
    assert folder == tmp_path / "synthetic-100-python"
    raw = pickle.loads((folder / "train").read_bytes(), encoding="bytes")
    assert raw[b"data"].shape == (300, 3072) and len(raw[b"fine_labels"]) == 300
    ds = D.load_dataset(DataConfig(source="synthetic", test_limit=50), tmp_path)
    ref = D.synthetic_dataset(3, 300, 100)
    np.testing.assert_array_equal(ds.train.images, ref.train.images)
    np.testing.assert_array_equal(ds.train.labels, ref.train.labels)
    np.testing.assert_array_equal(ds.test.images, ref.test.images[:50])
    assert ds.classes == ref.classes and ds.source == "synthetic"


# ---------------------------------------------------------------------------
# DevicePipeline (CPU)


@pytest.fixture(scope="module")
def small() -> D.Dataset:
    return D.synthetic_dataset(0, 103, 37)


def batches(it):
    """Cloned (x, y) pairs; a multi-scale x (a tuple of size groups) stays a tuple."""
    return [(tuple(g.clone() for g in x) if isinstance(x, tuple) else x.clone(), y.clone()) for x, y in it]


def same_x(a, b) -> bool:
    if isinstance(a, tuple) or isinstance(b, tuple):
        return isinstance(a, tuple) and isinstance(b, tuple) and len(a) == len(b) and all(
            torch.equal(u, v) for u, v in zip(a, b))
    return torch.equal(a, b)


def as_rows(xs, ys):
    """Samples as a sorted list of (label, bytes) for multiset comparisons."""
    rows = []
    for x, y in zip(xs, ys):
        for xi, yi in zip(x, y):
            rows.append((int(yi), xi.contiguous().numpy().tobytes()))
    return sorted(rows)


def pipe(ds, **kw) -> D.DevicePipeline:
    world = {k: kw.pop(k) for k in ("rank", "world_size", "channels_last") if k in kw}
    return D.DevicePipeline(ds, DataConfig(source="synthetic", **kw), torch.device("cpu"), **world)


@pytest.mark.parametrize("size", [32, 64])
def test_device_batches_shapes_and_range(small, size):
    p = pipe(small, image_size=size, augment="crop_flip")
    assert p.num_train == 103 and p.num_test == 37 and p.steps_per_epoch(25) == 5
    out = batches(p.train_batches(0, 0, 25))
    assert len(out) == 5 and [len(y) for _, y in out] == [25, 25, 25, 25, 3]
    for x, y in out:
        assert x.dtype == torch.float32 and x.shape[1:] == (3, size, size)
        assert x.is_contiguous(memory_format=torch.channels_last)
        assert y.dtype == torch.int64 and x.device.type == "cpu"
        assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    tests = batches(p.test_batches(16))
    assert [len(y) for _, y in tests] == [16, 16, 5]
    assert all(x.shape[1:] == (3, size, size) for x, _ in tests)


def test_multiscale_train_sizes(small):
    p = pipe(small, image_size=32, train_sizes=[32, 64])
    sizes = [[g.shape[-1] for g in x] for x, _ in p.train_batches(0, 0, 10)]
    assert all(s in ([32], [64], [32, 64]) for s in sizes) and sizes.count([32, 64]) >= len(sizes) - 2
    assert sizes == [[g.shape[-1] for g in x] for x, _ in p.train_batches(0, 0, 10)]
    assert {x.shape[-1] for x, _ in p.test_batches(10)} == {32}


def test_resize_matches_float_bilinear(small):
    p = pipe(small, image_size=64, augment="none", shuffle=False)
    x, _ = next(p.train_batches(0, 0, 8))
    src = torch.from_numpy(small.train.images[:8]).float()
    ref = torch.nn.functional.interpolate(src, size=(64, 64), mode="bilinear", align_corners=False) / 255
    assert (x - ref).abs().max() <= 1 / 255 + 1e-6  # uint8 resize rounds to the nearest level


@pytest.mark.parametrize("mode", ["none", "cifar100", "imagenet"])
@pytest.mark.parametrize("channels_last", [True, False])
def test_normalize_modes(small, mode, channels_last):
    p = pipe(small, augment="none", shuffle=False, normalize=mode, channels_last=channels_last)
    x, y = next(p.train_batches(0, 0, 16))
    img = small.train.images[:16].astype(np.float32) / 255.0
    mean, std = D.NORMALIZE_STATS[mode]
    ref = (img - np.array(mean, np.float32)[:, None, None]) / np.array(std, np.float32)[:, None, None]
    if mode == "none":
        np.testing.assert_array_equal(x.numpy(), img)  # bit-identical to the seed's / 255.
    else:
        np.testing.assert_allclose(x.numpy(), ref, atol=2e-6, rtol=1e-5)
    assert x.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    assert y.tolist() == small.train.labels[:16].tolist()
    xt, _ = next(p.test_batches(16))
    timg = small.test.images[:16].astype(np.float32) / 255.0
    tref = (timg - np.array(mean, np.float32)[:, None, None]) / np.array(std, np.float32)[:, None, None]
    np.testing.assert_allclose(xt.numpy(), tref, atol=2e-6, rtol=1e-5)


def test_shuffle_false_is_sequential(small):
    p = pipe(small, augment="none", shuffle=False)
    out = batches(p.train_batches(0, 0, 20))
    assert torch.cat([y for _, y in out]).tolist() == small.train.labels.tolist()
    x = torch.cat([x for x, _ in out])
    np.testing.assert_array_equal((x * 255).round().to(torch.uint8).numpy(), small.train.images)
    # same order every epoch
    assert torch.cat([y for _, y in p.train_batches(5, 9, 20)]).tolist() == small.train.labels.tolist()


def test_shuffle_order_depends_on_seed_and_epoch(small):
    p = pipe(small, augment="none")
    def labels(epoch, seed):
        return torch.cat([y for _, y in p.train_batches(epoch, seed, 16)]).tolist()
    assert labels(0, 0) == labels(0, 0)
    assert labels(0, 0) != labels(1, 0) and labels(0, 0) != labels(0, 1)
    assert sorted(labels(3, 4)) == sorted(small.train.labels.tolist())


def _crops(img: np.ndarray, pad: int):
    padded = np.pad(img, ((0, 0), (pad, pad), (pad, pad)))
    for oy in range(2 * pad + 1):
        for ox in range(2 * pad + 1):
            c = padded[:, oy:oy + 32, ox:ox + 32]
            yield c
            yield c[:, :, ::-1]


def test_crop_flip_changes_images_keeps_labels(small):
    plain = pipe(small, augment="none", shuffle=False)
    aug = pipe(small, augment="crop_flip", crop_padding=4, shuffle=False)
    xa, ya = map(torch.cat, zip(*aug.train_batches(0, 0, 32)))
    xp, yp = map(torch.cat, zip(*plain.train_batches(0, 0, 32)))
    assert ya.tolist() == yp.tolist()  # same samples, same order; only pixels change
    changed = (xa != xp).flatten(1).any(1).float().mean()
    assert changed > 0.8
    u8 = (xa * 255).round().to(torch.uint8).numpy()
    for i in range(0, 103, 9):  # every output is a zero-padded crop of its image, maybe mirrored
        assert any(np.array_equal(u8[i], c) for c in _crops(small.train.images[i], 4)), i
    # flips alone: each image is itself or its mirror, and both occur
    xf = torch.cat([x for x, _ in pipe(small, augment="flip", shuffle=False).train_batches(0, 0, 32)])
    same = (xf == xp).flatten(1).all(1)
    mirrored = (xf == xp.flip(-1)).flatten(1).all(1)
    assert bool((same | mirrored).all()) and 10 < int(mirrored.sum()) < 93


@pytest.mark.parametrize("augment,sizes", [("crop_flip", []), ("crop_flip", [32, 48]), ("flip", [])])
def test_resume_reproduces_the_tail(small, augment, sizes):
    p = pipe(small, augment=augment, train_sizes=sizes)
    full = batches(p.train_batches(2, 7, 10))
    for k in (1, 6, 10):
        tail = batches(p.train_batches(2, 7, 10, start_step=k))
        assert len(tail) == len(full) - k
        for (xa, ya), (xb, yb) in zip(full[k:], tail):
            assert same_x(xa, xb) and torch.equal(ya, yb)
    assert batches(p.train_batches(2, 7, 10, start_step=99)) == []
    other = batches(p.train_batches(3, 7, 10))
    assert not all(torch.equal(a[1], b[1]) for a, b in zip(full, other))


def _split_like(y, groups):
    return list(y.split([len(g) for g in groups]))


@pytest.mark.parametrize("batch_size", [20, 7])
def test_world_size_two_shards_equal_one_process(small, batch_size):
    one = pipe(small, augment="crop_flip", train_sizes=[32, 40])
    ranks = [pipe(small, augment="crop_flip", train_sizes=[32, 40], rank=r, world_size=2) for r in (0, 1)]
    steps = one.steps_per_epoch(batch_size)
    assert ranks[0].steps_per_epoch(batch_size) == ranks[1].steps_per_epoch(batch_size) == steps
    full = batches(one.train_batches(1, 3, batch_size))
    parts = [batches(r.train_batches(1, 3, batch_size)) for r in ranks]
    assert len(parts[0]) == len(parts[1]) == len(full)
    comparable = 0
    for (x, y), (x0, y0), (x1, y1) in zip(full, parts[0], parts[1]):
        assert abs(len(y0) - len(y1)) <= 1 and len(y0) + len(y1) == len(y)
        assert sorted(torch.cat([y0, y1]).tolist()) == sorted(y.tolist())
        sizes = [g.shape[-1] for g in x0]
        assert sizes == [g.shape[-1] for g in x1]  # every rank runs the same forwards
        if sizes != [g.shape[-1] for g in x]:
            continue  # a group too small on one rank joined the larger size (rare; see scale_groups)
        comparable += 1
        for g, g0, g1 in zip(x, x0, x1):  # per size: the ranks' images are the single process's
            n0, n1 = len(g0), len(g1)
            assert n0 + n1 == len(g)
        assert as_rows([*x0, *x1], [*_split_like(y0, x0), *_split_like(y1, x1)]) == as_rows(
            list(x), _split_like(y, x))
    # 7 on 2 ranks gives a rank 3 images: never 2 of each size, so its steps run at one size
    assert comparable >= (len(full) - 2 if batch_size >= 20 else 1)
    # test: the union over ranks is the whole test set exactly once
    t_one = batches(one.test_batches(batch_size))
    t_parts = [batches(r.test_batches(batch_size)) for r in ranks]
    assert as_rows(*zip(*(t_parts[0] + t_parts[1]))) == as_rows(*zip(*t_one))
    assert sum(len(y) for _, y in t_parts[0] + t_parts[1]) == 37
    assert [ranks[r].num_test_batches(batch_size) for r in (0, 1)] == [len(t_parts[0]), len(t_parts[1])]


def test_output_buffers_are_reused_only_when_released(small, monkeypatch):
    monkeypatch.setattr(D.pipeline._BufferPool, "MIN_BYTES", 0)  # pool even these small batches
    p = pipe(small, augment="crop_flip", image_size=40)
    ref = batches(pipe(small, augment="crop_flip", image_size=40).train_batches(0, 0, 10))
    assert p._finish._buffers.enabled
    ptrs = []
    for x, _ in p.train_batches(0, 0, 10):
        ptrs.append(x.data_ptr())
    assert len(set(ptrs)) <= 3 < len(ptrs)  # recycled
    # anything that still refers to a batch keeps it from being recycled
    held = {}
    w = torch.ones(3, 40, 40, requires_grad=True)
    for step, (x, _) in enumerate(p.train_batches(0, 0, 10)):
        if step == 0:
            held["name"] = x
        elif step == 1:
            held["view"] = x[:2]
            del x
        elif step == 2:
            held["graph"] = (x * w).sum()  # autograd saves x
            held["graph_x"] = x.clone()
            del x
        elif step == 3:
            held["numpy"] = x.numpy()
            held["numpy_x"] = x.clone()
            del x
    assert torch.equal(held["name"], ref[0][0])
    assert torch.equal(held["view"], ref[1][0][:2])
    held["graph"].backward()
    assert torch.allclose(w.grad, held["graph_x"].sum(0))
    np.testing.assert_array_equal(held["numpy"], held["numpy_x"].numpy())
    # and the batches themselves are unchanged by the recycling
    for (xa, ya), (xb, yb) in zip(batches(p.train_batches(0, 0, 10)), ref):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    # buffers first made under inference_mode (evaluation) still serve training
    q = pipe(small, augment="none", image_size=40)
    with torch.inference_mode():
        for _ in q.train_batches(0, 0, 10):
            pass
    for x, _ in q.train_batches(0, 0, 10):
        assert not x.is_inference()


def test_pipeline_leaves_global_rng_alone(small):
    state = torch.get_rng_state()
    p = pipe(small, augment="crop_flip", train_sizes=[32, 48])
    for _ in p.train_batches(0, 0, 16):
        pass
    assert torch.equal(state, torch.get_rng_state())


def test_bad_batch_sizes(small):
    p = pipe(small, rank=1, world_size=4)
    with pytest.raises(ValueError):
        p.steps_per_epoch(0)
    with pytest.raises(ValueError):
        p.steps_per_epoch(3)
    # 103 = 10 * 10 + 3: a last batch of 3 cannot feed 4 ranks; it is dropped
    assert p.steps_per_epoch(10) == 10 and pipe(small).steps_per_epoch(10) == 11


# ---------------------------------------------------------------------------
# AlbumentationsPipeline


@pytest.fixture(scope="module")
def albu_data() -> D.Dataset:
    return D.synthetic_dataset(0, 64, 16)


def albu(ds, workers, **kw):
    cfg = DataConfig(source="synthetic", augment="albumentations", num_workers=workers, **kw)
    p = D.make_pipeline(ds, cfg, torch.device("cpu"))
    assert isinstance(p, D.AlbumentationsPipeline)
    return p


def test_albumentations_pipeline(albu_data):
    p0 = albu(albu_data, 0)
    p2 = albu(albu_data, 2)
    try:
        a = batches(p0.train_batches(0, 0, 16))
        assert len(a) == 4
        for x, y in a:
            assert x.shape == (16, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
            assert x.is_contiguous(memory_format=torch.channels_last)
            assert 0 <= float(x.min()) and float(x.max()) <= 1
        assert sorted(torch.cat([y for _, y in a]).tolist()) == sorted(albu_data.train.labels.tolist())
        b = batches(p0.train_batches(0, 0, 16))
        it = p2.train_batches(3, 0, 16)
        next(it)
        del it  # an epoch abandoned half way does not leak into the next one
        c = batches(p2.train_batches(0, 0, 16))  # workers do not change the batches
        d = batches(p2.train_batches(0, 0, 16))  # persistent workers, second pass
        for (xa, ya), (xb, yb), (xc, yc), (xd, yd) in zip(a, b, c, d):
            assert torch.equal(xa, xb) and torch.equal(xa, xc) and torch.equal(xa, xd)
            assert torch.equal(ya, yc)
        e = batches(p2.train_batches(1, 0, 16))
        assert not all(torch.equal(x1, x2) for (x1, _), (x2, _) in zip(a, e))
        tail = batches(p2.train_batches(0, 0, 16, start_step=2))
        assert all(torch.equal(x1, x2) for (x1, _), (x2, _) in zip(a[2:], tail)) and len(tail) == 2
        # the augmentation does change images (p=1: one of the five transforms on each)
        plain = pipe(albu_data, augment="none")
        ref = batches(plain.train_batches(0, 0, 16))
        assert all(torch.equal(y1, y2) for (_, y1), (_, y2) in zip(a, ref))
        changed = torch.cat([(x1 != x2).flatten(1).any(1) for (x1, _), (x2, _) in zip(a, ref)])
        assert changed.float().mean() > 0.5
        # test batches: not augmented, same as the device pipeline
        for (x1, y1), (x2, y2) in zip(p2.test_batches(8), plain.test_batches(8)):
            assert torch.equal(x1, x2) and torch.equal(y1, y2)
    finally:
        p2.close()


def test_albumentations_resize_and_normalize(albu_data):
    p = albu(albu_data, 0, image_size=48, normalize="imagenet", augment_p=0.0)
    x, y = next(p.train_batches(0, 0, 8))
    assert x.shape == (8, 3, 48, 48) and float(x.min()) < 0
    plain = pipe(albu_data, augment="none", image_size=48, normalize="imagenet")
    xr, yr = next(plain.train_batches(0, 0, 8))  # p=0: no augmentation, same order
    assert torch.equal(y, yr) and torch.allclose(x, xr)


def test_make_pipeline_picks_the_device_pipeline(small):
    p = D.make_pipeline(small, DataConfig(source="synthetic", augment="crop_flip"), "cpu")
    assert isinstance(p, D.DevicePipeline)
