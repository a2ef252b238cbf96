"""MNIST data: reading IDX files (gzip or raw), clear errors on bad ones, the device dataset.

Statistical checks here spend 1 / STATISTICAL_BUDGET of the suite's FALSE_POSITIVE_RATE
(tests/conftest.py) in total, split across their pixels; each uses a fixed seed.
"""

import gzip
import hashlib
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from experiments.mnist import data
from experiments.mnist.data import DeviceDataset, MnistError, load_mnist
from conftest import STATISTICAL_BUDGET, z_threshold

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"


def write_idx(path: Path, array: np.ndarray, gz: bool) -> Path:
    """An IDX file of unsigned bytes: magic 0x0000 08 ndim, big-endian int32 sizes, the data."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    payload = struct.pack(">i", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}i", *array.shape)
    payload += array.tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)
    return path


def write_split(directory: Path, split: str, count: int, gz: bool, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=count, dtype=np.uint8)
    image_name, label_name = data.FILES[split]
    write_idx(directory / image_name, images, gz)
    write_idx(directory / label_name, labels, gz)
    return images, labels


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("split", ["train", "test"])
def test_reads_what_was_written(tmp_path, gz, split):
    images, labels = write_split(tmp_path, split, 7, gz)
    got_images, got_labels = load_mnist(tmp_path, split)
    assert got_images.dtype == torch.uint8 and got_images.shape == (7, 28, 28)
    assert got_labels.dtype == torch.int64 and got_labels.shape == (7,)
    assert np.array_equal(got_images.numpy(), images)
    assert np.array_equal(got_labels.numpy(), labels)


def test_directory_comes_from_the_environment(tmp_path, monkeypatch):
    write_split(tmp_path, "test", 3, gz=True)
    monkeypatch.setenv(data.MNIST_ENV, str(tmp_path))
    assert data.default_directory() == tmp_path
    assert load_mnist(split="test")[0].shape == (3, 28, 28)


def _truncate(path):
    path.write_bytes(path.read_bytes()[:-10])


def _bad_magic(path):
    raw = bytearray(path.read_bytes())
    raw[3] = 0x02
    path.write_bytes(bytes(raw))


def _corrupt_gzip(path):
    path.write_bytes(b"\x1f\x8b" + b"not really gzip" * 5)


def _truncate_gzip(path):
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


def _wrong_size(path):
    write_idx(path.with_name("train-images-idx3-ubyte"), np.zeros((7, 20, 20)), gz=False)


@pytest.mark.parametrize("damage, gz, needle", [
    (_truncate, False, "truncated"),
    (_bad_magic, False, "magic number"),
    (_corrupt_gzip, True, "gzip"),
    (_truncate_gzip, True, "gzip"),
    (_wrong_size, False, "(28, 28)"),
])
def test_damaged_image_file_names_the_file_and_the_fix(tmp_path, damage, gz, needle):
    write_split(tmp_path, "train", 7, gz)
    damage(tmp_path / ("train-images-idx3-ubyte" + (".gz" if gz else "")))
    with pytest.raises(MnistError) as error:
        load_mnist(tmp_path, "train")
    message = str(error.value)
    assert "\n" not in message
    assert "train-images-idx3-ubyte" in message and needle in message
    assert "download it again" in message


def test_missing_file_and_directory_say_where_to_look(tmp_path):
    write_split(tmp_path, "train", 7, gz=True)
    (tmp_path / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(MnistError, match=r"train-labels-idx1-ubyte\[\.gz\] not found; .*--data-dir"):
        load_mnist(tmp_path, "train")
    with pytest.raises(MnistError, match=r"does not exist; .*MNIST_DIR"):
        load_mnist(tmp_path / "nowhere", "train")
    with pytest.raises(MnistError, match="unknown split 'valid'"):
        load_mnist(tmp_path, "valid")


def test_missing_files_name_every_way_to_give_the_folder(tmp_path):
    # The same message reaches the trainer and the benchmark (--data-dir DIR) and the mnist-vae
    # study (--set data_dir=DIR); $MNIST_DIR works for all of them.
    for directory in (tmp_path, tmp_path / "nowhere"):
        with pytest.raises(MnistError) as error:
            load_mnist(directory, "train")
        message = str(error.value)
        assert "\n" not in message
        assert f"${data.MNIST_ENV}" in message
        assert "--data-dir DIR" in message and "--set data_dir=DIR" in message
        assert "python -m experiments mnist-vae" in message
        assert "download(" in message


def test_images_and_labels_must_agree(tmp_path):
    write_split(tmp_path, "train", 7, gz=False)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(6), gz=False)
    with pytest.raises(MnistError, match="7 images but .* 6 labels"):
        load_mnist(tmp_path, "train")
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.full(7, 12), gz=False)
    with pytest.raises(MnistError, match="label 12"):
        load_mnist(tmp_path, "train")


@pytest.mark.skipif(not (SHARED / "MD5SUMS.uncompressed").is_file(),
                    reason="no shared MNIST copy on this machine")
def test_shared_copy_has_the_published_shapes_and_md5():
    sums = dict(reversed(line.split()) for line in
                (SHARED / "MD5SUMS.uncompressed").read_text().splitlines() if line.strip())
    assert sums == data.MD5
    for name, md5 in sums.items():
        assert hashlib.md5(gzip.decompress((SHARED / f"{name}.gz").read_bytes())).hexdigest() == md5
    for split, count in data.SIZES.items():
        images, labels = load_mnist(SHARED, split)
        assert images.shape == (count, 28, 28) and labels.shape == (count,)
        assert int(labels.min()) == 0 and int(labels.max()) == 9


# ------------------------------------------------------------------------------------------------
# DeviceDataset
# ------------------------------------------------------------------------------------------------


def _images(count=10, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, 28, 28), generator=generator, dtype=torch.uint8)


def test_an_epoch_is_a_permutation_with_the_partial_batch_dropped():
    images = _images(10)
    ds = DeviceDataset(images, "grey", dtype=torch.float64)
    assert len(ds) == 10 and ds.data.shape == (10, 784)
    batches = list(ds.batches(3, torch.Generator().manual_seed(0)))
    assert [b.shape for b in batches] == [(3, 784)] * 3
    assert all(b.dtype == torch.float64 for b in batches)
    grey = images.reshape(10, -1).double() / 255
    rows = [int((grey == row).all(-1).nonzero()) for b in batches for row in b]
    assert len(set(rows)) == 9  # nine distinct images: one epoch, no repeats


def _pixel_means(ds, epochs, seed=0):
    generator = torch.Generator().manual_seed(seed)
    draws = torch.cat([x for _ in range(epochs) for x in ds.batches(len(ds), generator)])
    return draws.mean(0), draws.shape[0]


PIXELS = torch.arange(784) % 256  # every grey level, so every Bernoulli probability, appears
STAT_CHECKS = 2  # the dynamic check below, and its use in the negative test, share the budget


def _bernoulli_p_values(ds, epochs):
    """Per pixel with 0 < p < 1, p = pixel/255: the exact two-sided binomial p-value of its count
    of ones over ``epochs`` draws of each of the dataset's images."""
    means, count = _pixel_means(ds, epochs)
    p = (PIXELS.double() / 255).numpy()
    inside = (p > 0) & (p < 1)
    ones = np.rint(means.numpy() * count)[inside]
    lower = stats.binom.cdf(ones, count, p[inside])
    upper = stats.binom.sf(ones - 1, count, p[inside])
    return np.minimum(1.0, 2 * np.minimum(lower, upper))


def _alpha(num_comparisons):
    """The per-pixel level that matches z_threshold's share of the false-positive rate."""
    return 2 * stats.norm.sf(z_threshold(num_comparisons, share=1 / STAT_CHECKS / STATISTICAL_BUDGET))


def _constant_images(count):
    return PIXELS.to(torch.uint8).reshape(1, 28, 28).expand(count, 28, 28).clone()


@pytest.mark.statistical
def test_dynamic_binarization_redraws_every_minibatch():
    """Each pixel's ones across 400 draws are Binomial(400, pixel/255): an exact binomial test
    per pixel at the level of z_threshold (Bonferroni over the pixels), seed 0.

    Rejects a correct sampler with probability FALSE_POSITIVE_RATE / STATISTICAL_BUDGET / 2.
    """
    ds = DeviceDataset(_constant_images(4), "dynamic", dtype=torch.float64)
    p_values = _bernoulli_p_values(ds, epochs=100)
    assert p_values.min() > _alpha(p_values.size)
    first, second = ds.batches(2, torch.Generator().manual_seed(0))
    assert set(first.unique().tolist()) == {0.0, 1.0}
    assert not torch.equal(first, second)


def test_fixed_binarization_fails_the_redraw_check_and_never_changes():
    # The negative test of the check above: one draw reused is not a fresh draw per minibatch.
    ds = DeviceDataset(_constant_images(4), "fixed", dtype=torch.float64, seed=3)
    p_values = _bernoulli_p_values(ds, epochs=100)
    assert p_values.min() < _alpha(p_values.size)
    generator = torch.Generator().manual_seed(0)
    epochs = [torch.cat(list(ds.batches(4, generator))) for _ in range(3)]
    assert all(torch.equal(e.sort(0).values, epochs[0].sort(0).values) for e in epochs)
    assert torch.equal(ds.evaluation_images(), ds.data)
    again = DeviceDataset(_constant_images(4), "fixed", dtype=torch.float64, seed=3)
    assert torch.equal(again.data, ds.data)


def test_evaluation_images():
    images = _images(6)
    dynamic = DeviceDataset(images, "dynamic", dtype=torch.float32)
    first = dynamic.evaluation_images(seed=1)
    assert first.shape == (6, 784) and first.dtype == torch.float32
    assert torch.equal(first, dynamic.evaluation_images(seed=1))
    assert not torch.equal(first, dynamic.evaluation_images(seed=2))
    assert set(first.unique().tolist()) <= {0.0, 1.0}
    grey = DeviceDataset(images, "grey", dtype=torch.float64)
    assert torch.equal(grey.evaluation_images(), images.reshape(6, -1).double() / 255)


def test_bad_input_says_what_to_do():
    with pytest.raises(ValueError, match="binarization must be one of dynamic, fixed, grey"):
        DeviceDataset(_images(), "otsu")
    with pytest.raises(ValueError, match="uint8 tensor"):
        DeviceDataset(_images().float(), "grey")
    ds = DeviceDataset(_images(), "grey")
    with pytest.raises(ValueError, match=r"batch_size must be an int in 1\.\.10"):
        next(ds.batches(11, torch.Generator()))
    with pytest.raises(ValueError, match="generator must be a torch.Generator"):
        next(ds.batches(2, 0))


def test_download_checks_md5_and_leaves_nothing_behind_on_failure(tmp_path, monkeypatch):
    # No network: urlopen serves files written here; the published sums are swapped for theirs.
    source = tmp_path / "mirror"
    source.mkdir()
    write_split(source, "train", 5, gz=True)
    write_split(source, "test", 3, gz=True, seed=1)
    sums = {name: hashlib.md5(gzip.decompress((source / f"{name}.gz").read_bytes())).hexdigest()
            for name in data.MD5}
    served = []

    class Response:
        def __init__(self, url, timeout=None):
            served.append(url)
            self.payload = (source / url.rsplit("/", 1)[1]).read_bytes()

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read(self):
            return self.payload

    monkeypatch.setattr(data.urllib.request, "urlopen", Response)
    monkeypatch.setattr(data, "MD5", {**sums, "t10k-labels-idx1-ubyte": "0" * 32})
    target = tmp_path / "mnist"
    with pytest.raises(MnistError, match=r"t10k-labels-idx1-ubyte\.gz .*MD5 mismatch.*by hand"):
        data.download(target)
    assert not (target / "t10k-labels-idx1-ubyte.gz").exists()
    assert not [p for p in target.iterdir() if p.name.startswith(".")]  # no temporary files
    monkeypatch.setattr(data, "MD5", sums)
    served.clear()
    assert data.download(target) == target
    assert served == [data.MIRRORS[0] + "t10k-labels-idx1-ubyte.gz"]  # the others were kept
    images, labels = load_mnist(target, "test")
    assert images.shape == (3, 28, 28) and labels.shape == (3,)


@pytest.fixture
def real_test_split(tmp_path):
    """A copy of the published test files, re-gzipped."""
    try:
        images, labels = load_mnist(split="test")
    except MnistError as error:
        pytest.skip(f"no MNIST files: {error}")
    write_idx(tmp_path / "t10k-images-idx3-ubyte", images.numpy(), gz=True)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", labels.numpy().astype(np.uint8), gz=True)
    return tmp_path, images


def test_the_published_files_load_and_their_sum_is_computed_at_every_load(real_test_split,
                                                                          monkeypatch):
    folder, images = real_test_split
    calls = []
    md5 = hashlib.md5
    monkeypatch.setattr(data.hashlib, "md5", lambda *args: calls.append(1) or md5(*args))
    loaded, _ = load_mnist(folder, "test")
    assert torch.equal(loaded, images) and len(calls) == 2  # images and labels
    load_mnist(folder, "test")
    assert len(calls) == 4  # no verdict is kept: the contents are summed again


def test_a_byte_changed_in_place_with_its_time_restored_is_refused(real_test_split):
    # As `touch -r`, `cp -p` and `rsync -a` leave it: same size, same modification time.
    folder, images = real_test_split
    raw = write_idx(folder / "t10k-images-idx3-ubyte", images.numpy(), gz=False)
    (folder / "t10k-images-idx3-ubyte.gz").unlink()
    load_mnist(folder, "test")  # accepted once, as the published file
    before = raw.stat()
    content = bytearray(raw.read_bytes())
    content[16 + 1234 * 784 + 400] ^= 0x01  # one pixel of one image
    raw.write_bytes(bytes(content))
    os.utime(raw, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert raw.stat().st_mtime_ns == before.st_mtime_ns and raw.stat().st_size == before.st_size
    with pytest.raises(MnistError, match=r"t10k-images-idx3-ubyte is corrupt: the MD5"):
        load_mnist(folder, "test")


def test_one_changed_pixel_inside_a_valid_gzip_stops_the_run(real_test_split):
    folder, images = real_test_split
    changed = images.numpy().copy()
    changed[1234, 14, 14] ^= 0x01  # one byte of one image; gzip's own CRC is recomputed
    write_idx(folder / "t10k-images-idx3-ubyte", changed, gz=True)
    with pytest.raises(MnistError, match=r"t10k-images-idx3-ubyte.gz is corrupt: the MD5 of its "
                                         r"contents is [0-9a-f]{32}, the published file's is "
                                         "2646ac647ad5339dbf082846283269ea"):
        load_mnist(folder, "test")


# ------------------------------------------------------------------------------------------------
# Where the files are found, and what a failed download leaves
# ------------------------------------------------------------------------------------------------


@pytest.fixture
def places(tmp_path, monkeypatch):
    """The usual places under tmp_path: the repository's data/mnist and the download cache."""
    monkeypatch.delenv(data.MNIST_ENV, raising=False)
    monkeypatch.setattr(data, "REPO", tmp_path / "repo")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path / "repo" / "data" / "mnist", tmp_path / "home" / ".cache" / "vae-gradients" / "mnist"


def test_an_empty_or_partial_folder_never_hides_a_complete_copy(places):
    repository, cache = places
    cache.mkdir(parents=True)
    write_split(cache, "train", 3, gz=True)
    write_split(cache, "test", 3, gz=True)
    repository.mkdir(parents=True)  # as a failed download of an older version left it
    assert data.default_directory() == cache
    write_split(repository, "test", 3, gz=True)  # half the files
    assert data.default_directory() == cache
    write_split(repository, "train", 3, gz=False)
    assert data.default_directory() == repository  # complete: first in the order
    for path in cache.iterdir():
        path.unlink()
    (repository / "t10k-images-idx3-ubyte.gz").unlink()
    assert data.default_directory() == repository  # no complete copy: the error names this one


def test_a_failed_download_removes_the_folders_it_made(places, monkeypatch):
    _, cache = places

    def offline(url, timeout=None):
        raise OSError("network unreachable")

    monkeypatch.setattr(data.urllib.request, "urlopen", offline)
    with pytest.raises(MnistError, match="could not download train-images-idx3-ubyte.gz"):
        data.download(cache)
    assert not cache.exists() and not cache.parent.exists()
    assert data.default_directory() == cache  # the download place again, with nothing in it
    kept = cache.parent / "other.txt"
    cache.mkdir(parents=True)
    kept.write_text("someone else's")
    with pytest.raises(MnistError):
        data.download(cache)
    assert kept.exists() and cache.is_dir()  # folders it did not make are left alone


def test_a_data_dir_that_is_a_file_is_named_as_one(tmp_path):
    given = tmp_path / "mnist.gz"
    given.write_bytes(b"")
    with pytest.raises(MnistError, match=r"mnist.gz is a file, not a folder: give the folder"):
        load_mnist(given, "train")
