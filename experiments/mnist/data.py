"""MNIST: reading the IDX files, checking them, and holding the whole set on the device.

The four files of LeCun, Cortes & Burges (``train-images-idx3-ubyte`` and so on, gzipped or not)
are read from one directory: ``--data-dir`` (``--set data_dir=DIR`` for the mnist-vae study), else
$MNIST_DIR, else the first of the places that :func:`default_directory` lists that exists.
:func:`download` fetches them on a machine with internet access and checks the MD5 of the
uncompressed bytes.

:class:`DeviceDataset` keeps every image on the training device and draws each minibatch there
(a permutation and, for dynamic binarization, the Bernoulli draws), so an epoch does no host work.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import torch

__all__ = ["MNIST_ENV", "TEST_SEED", "MnistError", "default_directory", "load_mnist", "download",
           "DeviceDataset", "FILES", "MD5", "BINARIZATIONS"]

MNIST_ENV = "MNIST_DIR"
# The one Bernoulli draw of the test images that every run of every group and estimator is
# evaluated on: no training seed moves it, so run r of a group and the solo run of seed s + r
# report their bounds on the same images (the draw seed 0 runs always had).
TEST_SEED = 1

REPO = Path(__file__).resolve().parents[2]

# split -> (images file, labels file), without the ".gz"
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
SIZES = {"train": 60_000, "test": 10_000}

# MD5 of the uncompressed files, as published with the data set.
MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}

# Mirrors that serve the original gzipped files, tried in order.
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)

# IDX magic numbers: two zero bytes, the type code (0x08 = unsigned byte), the number of dimensions.
_MAGIC = {"images": 0x00000803, "labels": 0x00000801}

BINARIZATIONS = ("dynamic", "fixed", "grey")

# Every command that reads MNIST shows this: the trainer and the benchmark take --data-dir, the
# mnist-vae study takes --set data_dir=DIR, and all of them read $MNIST_DIR.
_HOW = (f"set ${MNIST_ENV}=DIR, or pass --data-dir DIR (python -m experiments mnist-vae: "
        "--set data_dir=DIR), or fetch the files with "
        "python -c 'from experiments.mnist.data import download; download(\"DIR\")'")


class MnistError(Exception):
    """A missing, truncated or corrupt MNIST file; the message names the file and the fix."""


def _holds(directory: Path, every: bool) -> bool:
    """Whether ``directory`` holds every MNIST file (``every``) or any, each gzipped or not."""
    found = [any((directory / f"{name}{suffix}").is_file() for suffix in (".gz", ""))
             for pair in FILES.values() for name in pair]
    return all(found) if every else any(found)


def default_directory() -> Path:
    """$MNIST_DIR if set, else the first of the usual places that holds the four files.

    A folder without them (an empty one that a failed download left, say) never hides a complete
    copy further down the list; with no complete copy, the first folder holding some of the files
    is returned, so that the error names what is missing there, else the download place.
    """
    if os.environ.get(MNIST_ENV):
        return Path(os.environ[MNIST_ENV]).expanduser()
    candidates = [REPO.parent / "shared" / "data" / "mnist", REPO / "data" / "mnist",
                  Path.home() / ".cache" / "vae-gradients" / "mnist"]
    for every in (True, False):
        for candidate in candidates:
            if candidate.is_dir() and _holds(candidate, every):
                return candidate
    return candidates[-1]


def _locate(directory: Path, name: str) -> Path:
    for candidate in (directory / f"{name}.gz", directory / name):
        if candidate.is_file():
            return candidate
    raise MnistError(f"{directory / name}[.gz] not found; {_HOW}")


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as handle:
                return handle.read()
        return path.read_bytes()
    except PermissionError:
        raise MnistError(f"cannot read {path}: permission denied; make it readable "
                         f"(chmod a+r) or point $MNIST_DIR at a readable copy") from None
    except (OSError, EOFError, zlib.error) as error:
        # gzip.BadGzipFile is an OSError; a truncated gzip stream is an EOFError
        raise MnistError(f"{path} is not a readable (gzip) file ({error}); "
                         f"delete it and download it again") from None


def _parse_idx(path: Path, data: bytes, kind: str) -> np.ndarray:
    """The array an IDX file holds, after checking its magic number, dimensions and length."""
    redo = "delete it and download it again"
    if len(data) < 4:
        raise MnistError(f"{path} is truncated ({len(data)} bytes); {redo}")
    (magic,) = struct.unpack(">i", data[:4])
    if magic != _MAGIC[kind]:
        raise MnistError(f"{path} has magic number {magic:#010x}, expected {_MAGIC[kind]:#010x} "
                         f"for MNIST {kind}; check the file name or {redo}")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise MnistError(f"{path} is truncated inside its header; {redo}")
    shape = struct.unpack(f">{ndim}i", data[4:header])
    if kind == "images" and tuple(shape[1:]) != (28, 28):
        raise MnistError(f"{path} holds images of {shape[1:]} pixels, expected (28, 28); {redo}")
    expected = header + int(np.prod(shape))
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "longer than its header says"
        raise MnistError(f"{path} is {what} ({len(data)} bytes, its header says {expected}); "
                         f"{redo}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _check_md5(path: Path, name: str, data: bytes, count: int) -> None:
    """Refuse the full set's file whose contents are not the published ones (:data:`MD5`).

    A file holding as many entries as the published one must be it; one with fewer (a subset
    made on purpose, or a test's) has no published sum. The sum is computed from the contents at
    every load (about 0.08 s for the 47 MB of the training images, beside 0.5 s to read and
    unzip them): a verdict kept from an earlier load, keyed on the file's size and modification
    time, let a file changed in place with its time restored (``touch -r``, ``cp -p``,
    ``rsync -a``) through unchecked.
    """
    split = "train" if name.startswith("train") else "test"
    if count != SIZES[split]:
        return
    digest = hashlib.md5(data).hexdigest()
    if digest != MD5[name]:
        raise MnistError(f"{path} is corrupt: the MD5 of its contents is {digest}, the "
                         f"published file's is {MD5[name]}; delete it and download it again")


def load_mnist(directory: str | os.PathLike | None = None,
               split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """Images uint8 (N, 28, 28) and labels int64 (N,) of the ``split`` ("train" or "test").

    Reads ``<name>.gz`` if present, else the uncompressed ``<name>``. Checks each file's magic
    number, dimensions and length, that images and labels agree in number, that labels lie in
    0..9, and that a file of the full set (60,000 or 10,000 entries) has the published MD5 of
    its contents (:func:`_check_md5`). N is whatever the files hold.
    """
    if split not in FILES:
        raise MnistError(f"unknown split {split!r}; use 'train' or 'test'")
    directory = default_directory() if directory in (None, "") else Path(directory).expanduser()
    if directory.exists() and not directory.is_dir():
        raise MnistError(f"{directory} is a file, not a folder: give the folder that holds the "
                         f"MNIST files; {_HOW}")
    if not directory.is_dir():
        raise MnistError(f"MNIST directory {directory} does not exist; {_HOW}")
    if not os.access(directory, os.R_OK | os.X_OK):
        raise MnistError(f"cannot read the MNIST directory {directory}: permission denied; "
                         "make it readable or point $MNIST_DIR at a readable copy")
    image_name, label_name = FILES[split]
    image_path, label_path = _locate(directory, image_name), _locate(directory, label_name)
    image_bytes, label_bytes = _read_bytes(image_path), _read_bytes(label_path)
    images = _parse_idx(image_path, image_bytes, "images")
    labels = _parse_idx(label_path, label_bytes, "labels")
    _check_md5(image_path, image_name, image_bytes, images.shape[0])
    _check_md5(label_path, label_name, label_bytes, labels.shape[0])
    if images.shape[0] != labels.shape[0]:
        raise MnistError(f"{image_path} holds {images.shape[0]} images but {label_path} "
                         f"{labels.shape[0]} labels; download both files again")
    if labels.size and labels.max() > 9:
        raise MnistError(f"{label_path} holds label {int(labels.max())}, expected 0..9; "
                         "delete it and download it again")
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))


def download(directory: str | os.PathLike) -> Path:
    """Fetch the four gzipped files into ``directory`` (internet needed), checking their MD5.

    Each file is checked against :data:`MD5` (the published sums of the uncompressed bytes) before
    it is written, and written through a temporary file, so a failed download leaves no partial
    file, and the folders it made are removed again if they are still empty (an empty folder
    would otherwise come first in :func:`default_directory`'s places). Files already present and
    correct are kept. Returns the directory.
    """
    directory = Path(directory).expanduser()
    made = [folder for folder in (directory, *directory.parents) if not folder.exists()]
    directory.mkdir(parents=True, exist_ok=True)
    try:
        _fetch(directory)
    except BaseException:
        for folder in made:  # innermost first
            try:
                folder.rmdir()
            except OSError:  # not empty: a file this call or someone else put there
                break
        raise
    return directory


def _fetch(directory: Path) -> None:
    from experiments.common import atomic_write

    for name, md5 in MD5.items():
        target = directory / f"{name}.gz"
        if target.is_file():
            try:
                if hashlib.md5(_read_bytes(target)).hexdigest() == md5:
                    continue
            except MnistError:
                pass
        errors = []
        for mirror in MIRRORS:
            try:
                with urllib.request.urlopen(mirror + f"{name}.gz", timeout=60) as response:
                    payload = response.read()
                raw = gzip.decompress(payload)
            except (OSError, EOFError, zlib.error) as error:
                errors.append(f"{mirror}: {error}")
                continue
            if hashlib.md5(raw).hexdigest() != md5:
                errors.append(f"{mirror}: MD5 mismatch")
                continue
            atomic_write(target, lambda tmp: Path(tmp).write_bytes(payload))
            break
        else:
            raise MnistError(f"could not download {name}.gz ({'; '.join(errors)}); fetch it by "
                             f"hand into {directory} and check it against MD5 {md5}")


class DeviceDataset:
    """The whole image set on one device as (N, 784), with minibatches drawn on that device.

    binarization:
      "dynamic": each minibatch is a fresh draw x ~ Bernoulli(pixel / 255) (Burda et al. 2016);
      "fixed":   one draw, made once from ``seed``, used for every epoch;
      "grey":    pixel / 255, for a Gaussian decoder.

    The fixed draw and :meth:`evaluation_images` come from a CPU generator, so they are the same
    on every device; the per-minibatch draws come from the caller's generator on the device.
    """

    def __init__(self, images_uint8: torch.Tensor, binarization: str = "dynamic",
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                 seed: int = 0):
        if binarization not in BINARIZATIONS:
            raise ValueError(f"binarization must be one of {', '.join(BINARIZATIONS)}, "
                             f"got {binarization!r}")
        if not torch.is_tensor(images_uint8) or images_uint8.dtype != torch.uint8:
            got = images_uint8.dtype if torch.is_tensor(images_uint8) else type(images_uint8)
            raise ValueError(f"images must be a uint8 tensor (N, 28, 28) as load_mnist returns, "
                             f"got {got}")
        if images_uint8.dim() < 2 or images_uint8.shape[0] == 0:
            raise ValueError(f"images must have shape (N, 28, 28) or (N, 784) with N >= 1, "
                             f"got {tuple(images_uint8.shape)}")
        if not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating-point dtype, got {dtype}")
        self.binarization, self.device, self.dtype, self.seed = (
            binarization, torch.device(device), dtype, seed)
        self._pixels = images_uint8.reshape(images_uint8.shape[0], -1).cpu()
        if binarization == "fixed":
            values = self._draw(self._pixels, seed)
        else:  # dynamic keeps the probabilities; grey is the value itself
            values = self._pixels.to(dtype) / 255
        self.data = values.to(device=self.device, dtype=dtype)

    @staticmethod
    def _draw(pixels: torch.Tensor, seed: int) -> torch.Tensor:
        """One Bernoulli(pixel / 255) draw on the CPU, the same on every machine for one seed."""
        generator = torch.Generator().manual_seed(seed)
        return torch.bernoulli(pixels.to(torch.float32) / 255, generator=generator)

    def __len__(self) -> int:
        return self.data.shape[0]

    def batches(self, batch_size: int, generator: torch.Generator):
        """One epoch: minibatches (batch_size, 784) in a random order, the last partial one dropped.

        The permutation and the Bernoulli draws come from ``generator``, a torch.Generator on
        this dataset's device, so nothing goes through the host.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not (
                1 <= batch_size <= len(self)):
            raise ValueError(f"batch_size must be an int in 1..{len(self)} (the set's size), "
                             f"got {batch_size!r}")
        if not isinstance(generator, torch.Generator):
            raise ValueError("generator must be a torch.Generator on the dataset's device, "
                             f"got {type(generator).__name__}")
        if generator.device.type != self.device.type:
            raise ValueError(f"generator is on {generator.device}, the data on {self.device}; "
                             f"make it with torch.Generator(device={str(self.device)!r})")
        order = torch.randperm(len(self), generator=generator, device=self.device)
        for start in range(0, len(self) - batch_size + 1, batch_size):
            x = self.data[order[start:start + batch_size]]
            if self.binarization == "dynamic":
                uniform = torch.rand(x.shape, generator=generator, device=self.device,
                                     dtype=self.dtype)
                x = (uniform < x).to(self.dtype)
            yield x

    def evaluation_images(self, seed: int = 0) -> torch.Tensor:
        """The set as the model is evaluated on it, (N, 784) on the device.

        "dynamic": one Bernoulli draw from ``seed``; "fixed": the training draw; "grey": grey.
        """
        if self.binarization == "dynamic":
            return self._draw(self._pixels, seed).to(device=self.device, dtype=self.dtype)
        return self.data
