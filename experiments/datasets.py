"""Offline datasets for the studies: MNIST-1D, scikit-learn digits, Fashion-MNIST.

Nothing here downloads. MNIST-1D is generated locally by the `mnist1d`
package; digits ship with scikit-learn; Fashion-MNIST is read from the
original IDX files, which Debian's `dataset-fashion-mnist` package installs
(`apt-get install dataset-fashion-mnist`) in `FASHION_MNIST_DIR`.

Every loader returns `(train, validation, test)` pairs of float32 inputs and
int32 labels, with the validation split taken from the training data.
"""

import gzip
from pathlib import Path

import numpy as np

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
# IDX type codes (the third byte of the magic number) and their dtypes.
_IDX_DTYPES = {
    0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8",
}


def load_idx(path):
    """Reads an IDX file (optionally gzip-compressed) into a NumPy array.

    The format (LeCun's MNIST files): two zero bytes, a type code, the number
    of dimensions, then one big-endian int32 size per dimension and the data.

    Raises:
        ValueError: if the file is not an IDX file or is truncated.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number {raw[:4]!r}).")
    dims = raw[3]
    shape = tuple(int(v) for v in np.frombuffer(raw, ">i4", count=dims, offset=4))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    data = raw[4 + 4 * dims :]
    if len(data) != expected:
        raise ValueError(
            f"{path}: the header announces shape {shape} ({expected} bytes of "
            f"data), the file holds {len(data)}."
        )
    return np.frombuffer(data, dtype).reshape(shape)


def load_fashion_mnist(directory=FASHION_MNIST_DIR, validation=10000, train_size=None):
    """Fashion-MNIST from its IDX files: 28x28x1 images in [0, 1], int labels.

    Args:
        directory: the folder holding `train-images-idx3-ubyte.gz` and the
            three other original files.
        validation: the number of training images held out (the last ones of
            a fixed permutation) for validation.
        train_size: keep only this many of the remaining training images
            (the first of the same permutation), or None for all.
    """
    directory = Path(directory)
    files = {
        name: directory / f"{name}-idx{3 if 'images' in name else 1}-ubyte.gz"
        for name in ("train-images", "train-labels", "t10k-images", "t10k-labels")
    }
    missing = [str(p) for p in files.values() if not p.exists()]
    if missing:
        raise FileNotFoundError(
            f"Fashion-MNIST IDX files not found: {missing}. Install Debian's "
            "`dataset-fashion-mnist` package or pass the folder that holds them."
        )

    def images(name):
        return (load_idx(files[name])[..., None] / 255.0).astype("float32")

    x, y = images("train-images"), load_idx(files["train-labels"]).astype("int32")
    x_test, y_test = images("t10k-images"), load_idx(files["t10k-labels"]).astype("int32")
    order = np.random.default_rng(0).permutation(len(x))
    val, train = order[len(x) - validation :], order[: len(x) - validation]
    if train_size is not None:
        train = train[:train_size]
    return (x[train], y[train]), (x[val], y[val]), (x_test, y_test)


def load_mnist1d(num_samples, cache_dir):
    """MNIST-1D generated offline: 64% train, 16% validation, 20% test.

    Generation takes about 2 s per 1000 samples, so the arrays are cached.
    """
    cache = Path(cache_dir) / f"mnist1d_{num_samples}.npz"
    if not cache.exists():
        from mnist1d.data import get_dataset_args
        from mnist1d.data import make_dataset

        args = get_dataset_args()
        args.num_samples = num_samples
        data = make_dataset(args)
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, x=data["x"], y=data["y"], x_test=data["x_test"], y_test=data["y_test"])
    data = np.load(cache)
    x, y = data["x"][..., None].astype("float32"), data["y"].astype("int32")
    x_test = data["x_test"][..., None].astype("float32")
    y_test = data["y_test"].astype("int32")
    val = len(x) // 5
    return (x[val:], y[val:]), (x[:val], y[:val]), (x_test, y_test)


def load_digits():
    """scikit-learn digits (1797 8x8 images): 60% train, 20% val, 20% test."""
    from sklearn.datasets import load_digits as sk_digits

    digits = sk_digits()
    x = (digits.images[..., None] / 16.0).astype("float32")
    y = digits.target.astype("int32")
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    test = val = 360
    return (x[test + val :], y[test + val :]), (x[test : test + val], y[test : test + val]), (x[:test], y[:test])
