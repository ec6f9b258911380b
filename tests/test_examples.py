"""The examples run offline at tiny sizes; CIFAR-10 is read from mocked data."""

import gzip
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from script_loader import load_script

import keras_agrlearn


def load_example(name):
    return load_script(f"examples/{name}.py", f"example_{name}")


@pytest.fixture(scope="module")
def cifar():
    return load_example("cifar10_resnet")


@pytest.mark.parametrize("augment", [False, True])
def test_cifar10_loader_with_mock_data(cifar, augment):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=6):
        raw = next(iter(tfds.load("cifar10", split="train", as_supervised=True).batch(6)))
        images, labels = next(iter(cifar.load_cifar10("train", 6, augment=augment, seed=0)))
    images, labels = np.asarray(images), np.asarray(labels)
    assert images.shape == (6, 32, 32, 3) and images.dtype == np.float32
    assert labels.shape == (6,) and set(labels) <= set(range(10))
    expected = (np.asarray(raw[0]) / 255.0 - cifar.MEAN) / cifar.STD
    if augment:
        # Crops and flips move values around; padding adds zeros (the mean colour).
        allowed = np.unique(np.append(expected, 0.0))
        index = np.clip(np.searchsorted(allowed, images.ravel()), 1, len(allowed) - 1)
        nearest = np.minimum(
            np.abs(images.ravel() - allowed[index]), np.abs(images.ravel() - allowed[index - 1])
        )
        assert nearest.max() < 1e-4
    else:
        np.testing.assert_allclose(images, expected, atol=1e-5)
        np.testing.assert_array_equal(labels, np.asarray(raw[1]))


def resnet18_parameters(f):
    """Trainable parameters of the CIFAR ResNet-18 with stem width f, by hand."""
    total, previous = 27 * f + 2 * f, f
    for stage in range(4):
        c = f * 2**stage
        total += 9 * previous * c + 9 * c * c + 4 * c  # first block
        total += (previous * c + 2 * c) if stage else 0  # its 1x1 projection
        total += 2 * (9 * c * c + 2 * c)  # second block
        previous = c
    return total + 8 * f * 10 + 10


def test_resnet18_matches_the_paper_and_wraps(cifar):
    # He et al.'s CIFAR ResNet-18 has 11,173,962 trainable parameters; a
    # narrow copy of the same graph is checked to keep the test fast.
    assert resnet18_parameters(64) == 11_173_962
    model = cifar.resnet18(filters=8)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == resnet18_parameters(8)
    wrapped = keras_agrlearn.wrap(model, n=2, width=2)
    assert wrapped.output_shape == (None, 10)
    assert wrapped.get_layer("stem_conv").kernel.shape == (3, 3, 6, 16)


def test_quickstart_digits_runs(capsys):
    runs, comparison = load_example("quickstart_digits").main(["--epochs", "1", "--seeds", "2"])
    assert list(runs) == ["plain backbone", "wrap(backbone)"]
    for results in runs.values():
        assert len(results) == 2
        for r in results:
            assert 0.0 <= r["accuracy"] <= 1.0 and np.isfinite(r["nll"]) and r["nll"] > 0.0
            assert 0.0 < r["tempered_nll"] and r["temperature"] > 0 and r["train_seconds"] > 0
    assert comparison["seeds"] == 2
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("1 epochs, 2 seeds, 359 test images")
    assert lines[-1] == f"Verdict: {comparison['verdict']}."
    assert lines[-3].split()[:2] == ["accuracy", f"{comparison['accuracy']['difference']:+.4f}"]


@pytest.mark.skipif(
    keras.backend.backend() == "tensorflow",
    reason="TensorFlow's own oneDNN notice stays on where it computes",
)
def test_quickstart_output_is_only_the_results():
    # A fresh process, as a reader runs it: nothing before the results.
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(root))
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    done = subprocess.run(
        [sys.executable, str(root / "examples" / "quickstart_digits.py")]
        + ["--epochs", "1", "--seeds", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    lines = (done.stderr + done.stdout).splitlines()
    assert lines[0].startswith("1 epochs, 2 seeds, 359 test images"), lines[:3]
    assert len(lines) == 7 and lines[-1].startswith("Verdict: ")


def test_mnist1d_example_runs():
    example = load_example("mnist1d")
    (x, y), (x_test, y_test) = example.load_mnist1d(num_samples=200)
    assert x.shape == (160, 40, 1) and x_test.shape == (40, 40, 1)
    assert x.dtype == np.float32 and set(np.unique(y)) <= set(range(10))
    keras.backend.clear_session()
    results = example.main(
        ["--samples", "200", "--epochs", "1", "--width", "1", "--batch-size", "40"]
    )
    assert set(results) == {"plain", "plain_wide", "replicate", "contextual", "group"}
    for scores in results.values():
        assert 0.0 <= scores["accuracy"] <= 1.0 and scores["nll"] > 0


def write_idx(path, array):
    """An IDX file of unsigned bytes (the MNIST format), gzipped."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def fashion_mnist_dir(tmp_path, rng):
    """Tiny random stand-ins for the four Fashion-MNIST IDX files."""
    for split, count in (("train", 100), ("t10k", 50)):
        images = rng.integers(0, 256, (count, 28, 28))
        write_idx(tmp_path / f"{split}-images-idx3-ubyte.gz", images)
        write_idx(tmp_path / f"{split}-labels-idx1-ubyte.gz", np.arange(count) % 10)
    return tmp_path


def test_finetune_pretrained_reads_idx_files(fashion_mnist_dir, tmp_path, rng):
    pytest.importorskip("keras_hub")
    example = load_example("finetune_pretrained")
    array = rng.integers(0, 256, (3, 4, 5)).astype(np.uint8)
    write_idx(tmp_path / "array.gz", array)
    raw = tmp_path / "array-raw"
    raw.write_bytes(gzip.decompress((tmp_path / "array.gz").read_bytes()))
    for path in (tmp_path / "array.gz", raw):
        np.testing.assert_array_equal(example.read_idx(path), array)
    (x, y), (x_test, y_test) = example.load_fashion_mnist(fashion_mnist_dir)
    assert x.shape == (100, 28, 28) and x_test.shape == (50, 28, 28)
    np.testing.assert_array_equal(y, np.arange(100) % 10)
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist.*--data-dir"):
        example.load_fashion_mnist(tmp_path / "missing")


def test_finetune_pretrained_runs(fashion_mnist_dir, tmp_path):
    pytest.importorskip("keras_hub")
    example = load_example("finetune_pretrained")
    preset = tmp_path / "preset"
    results = example.main(
        ["--quick", "--data-dir", str(fashion_mnist_dir), "--preset-dir", str(preset)]
    )
    assert {"config.json", "model.weights.h5"} <= {p.name for p in preset.iterdir()}
    assert set(results) == {"plain", "agrlearn"}
    for accuracy, nll in results.values():
        assert 0.0 <= accuracy <= 1.0 and np.isfinite(nll) and nll > 0.0


def test_mixmo_resnet_example_runs():
    example = load_example("mixmo_resnet")
    model = keras_agrlearn.wrap(example.resnet(), n=2, mixing="cut")
    (mixed,) = [layer for layer in model.layers if isinstance(layer, keras_agrlearn.MixedEncoders)]
    assert mixed.name == "stem" and len(mixed.encoders) == 2
    keras.backend.clear_session()
    results = example.main(["--quick"])
    assert set(results) == {"sum", "cut"}
    for accuracy, seconds in results.values():
        assert 0.0 <= accuracy <= 1.0 and seconds > 0
