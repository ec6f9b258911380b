"""The uncertainty study's data helpers, corruptions and a smoke run at tiny sizes."""

import gzip
import json

import numpy as np
import pytest

from experiments import corruptions
from experiments import datasets
from experiments import study
from experiments import uncertainty


def write_idx(path, array, compress=True):
    codes = {np.dtype("uint8"): 0x08, np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D}
    header = bytes([0, 0, codes[array.dtype], array.ndim])
    header += np.array(array.shape, dtype=">u4").tobytes()
    opener = gzip.open if compress else open
    with opener(path, "wb") as f:
        f.write(header + array.tobytes())


@pytest.mark.parametrize("compress", [True, False])
@pytest.mark.parametrize(
    "array",
    [
        np.arange(2 * 3 * 4, dtype="uint8").reshape(2, 3, 4),
        np.array([7, 0, 255], dtype="uint8"),
        np.array([[-5, 70000]], dtype=">i4"),
        np.array([1.5, -2.25], dtype=">f4"),
    ],
    ids=["images", "labels", "int32", "float32"],
)
def test_load_idx_round_trip(tmp_path, array, compress):
    path = tmp_path / "data.idx"
    write_idx(path, array, compress)
    loaded = datasets.load_idx(path)
    assert loaded.shape == array.shape
    assert loaded.dtype.isnative
    np.testing.assert_array_equal(loaded, array)


@pytest.mark.parametrize(
    "content, match",
    [
        (b"\x00\x00\x08\x01\x00\x00\x00\x05\x01\x02", "announces shape"),
        (b"PK\x03\x04", "not an IDX file"),
        (b"", "not an IDX file"),
    ],
    ids=["truncated", "zip", "empty"],
)
def test_load_idx_refuses_broken_files(tmp_path, content, match):
    path = tmp_path / "broken"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=match):
        datasets.load_idx(path)


def test_load_fashion_mnist_from_a_directory(tmp_path, rng):
    images = rng.integers(0, 256, size=(6, 28, 28)).astype("uint8")
    labels = np.arange(6, dtype="uint8")
    for key, name in datasets.FASHION_MNIST_FILES.items():
        write_idx(tmp_path / f"{name}.gz", images if key.startswith("x") else labels)
    (x, y), (x_test, y_test) = datasets.read_fashion_mnist(tmp_path)
    np.testing.assert_array_equal(x, images)
    np.testing.assert_array_equal(y_test, labels)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        datasets.read_fashion_mnist(tmp_path)


def test_hold_out_classes_renumbers_the_rest():
    x = np.arange(10)[:, None] * 1.0
    y = np.array([0, 1, 2, 3, 4, 0, 1, 2, 3, 4])
    x_in, y_in, x_out = datasets.hold_out_classes(x, y, (1, 3))
    np.testing.assert_array_equal(y_in, [0, 1, 2, 0, 1, 2])
    np.testing.assert_array_equal(x_in[:, 0], [0, 2, 4, 5, 7, 9])
    np.testing.assert_array_equal(x_out[:, 0], [1, 3, 6, 8])


def test_digits_as_mnist_layout():
    images, labels = datasets.read_digits()
    assert images.shape == (1797, 8, 8) and images.max() <= 1.0 and labels.max() == 9
    big = datasets.digits_as_mnist(images[:5])
    assert big.shape == (5, 28, 28) and big.dtype == np.float32
    assert np.all(big[:, :4] == 0) and np.all(big[:, :, 24:] == 0)
    constant = datasets.resize_bilinear(np.full((1, 8, 8), 0.3), 20)
    np.testing.assert_allclose(constant, 0.3)


def test_make_mnist1d_overrides(tmp_path):
    x, y = datasets.make_mnist1d(50, seed=3)
    noisy, _ = datasets.make_mnist1d(50, seed=3, corr_noise_scale=1.0)
    assert x.shape == (50, 40) and set(y) <= set(range(10))
    assert not np.allclose(x, noisy)
    with pytest.raises(ValueError, match="no generator argument 'noise'"):
        datasets.make_mnist1d(10, seed=0, noise=1.0)


def bars(count=6, size=28):
    """Images with structure (a bright off-centre bar), so every corruption shows."""
    images = np.zeros((count, size, size), "float32")
    images[:, 6:20, 9:13] = 0.9
    images[:, 16:18, 4:24] = 0.6
    return images


@pytest.mark.parametrize("name", corruptions.CORRUPTIONS)
def test_corruptions_grow_with_severity(name):
    clean = bars()
    distances = []
    for severity in corruptions.SEVERITIES:
        out = corruptions.corrupt(clean, name, severity, seed=1)
        assert out.shape == clean.shape and out.dtype == np.float32
        assert out.min() >= 0.0 and out.max() <= 1.0
        np.testing.assert_array_equal(out, corruptions.corrupt(clean, name, severity, seed=1))
        distances.append(np.abs(out - clean).mean())
    assert distances[0] > 0
    assert all(a < b for a, b in zip(distances, distances[1:])), distances


def test_rotation_by_a_right_angle_is_rot90(rng):
    images = rng.random((4, 9, 9))
    out = corruptions.rotation(images, 90, np.random.default_rng(0))
    for image, rotated in zip(images, out):
        assert min(np.abs(rotated - np.rot90(image, k)).max() for k in (1, -1)) < 1e-6


def test_contrast_and_blur_keep_the_mean():
    clean = bars()
    reduced = corruptions.contrast(clean, 0.5)
    np.testing.assert_allclose(reduced.mean(axis=(1, 2)), clean.mean(axis=(1, 2)), rtol=1e-6)
    np.testing.assert_allclose(reduced.std(axis=(1, 2)), clean.std(axis=(1, 2)) * 0.5, rtol=1e-5)
    # The bar is far from the border, so blurring moves no mass out of the image.
    np.testing.assert_allclose(corruptions.blur(clean, 1.0).sum(), clean.sum(), rtol=1e-6)


@pytest.mark.parametrize("name, severity", [("snow", 1), ("blur", 0), ("blur", 6)])
def test_unknown_corruption_or_severity(name, severity):
    with pytest.raises(ValueError):
        corruptions.corrupt(bars(), name, severity)


def test_mnist1d_shift_levels_grow():
    keys = uncertainty.MNIST1D_SHIFT[0].keys()
    for key in keys:
        values = [level[key] for level in uncertainty.MNIST1D_SHIFT]
        assert all(a < b for a, b in zip(values, values[1:])), key


def test_quick_run_on_digits_resumes_and_reports(tmp_path, monkeypatch):
    records, out = tmp_path / "records", tmp_path / "out"
    argv = ["--quick", "--datasets", "digits", "--records", str(records), "--out", str(out)]
    uncertainty.main(argv)
    runs = uncertainty.load_records(records)
    assert sorted(r["method"] for r in runs) == sorted(uncertainty.METHODS)
    for run in runs:
        assert 0.0 <= run["test"]["accuracy"] <= 1.0 and run["test"]["nll"] > 0
        assert set(run["ood"]["held_out"]["entropy"]) == {"ood_auroc", "ood_aupr", "fpr95"}
        assert sum(run["reliability"]["count"]) == len(uncertainty.load_digits(None)["test"][1])
        assert ("disagreement" in run["test"]) == (run["method"] != "plain")
    ensemble = next(r for r in runs if r["method"] == "ensemble")
    assert len(ensemble["epochs_run"]) == 3
    text = (out / "RESULTS_UNCERTAINTY.md").read_text()
    assert "### digits" in text and "deep ensemble" in text and "AUROC held_out" in text
    for plot in ("uncertainty_reliability.png", "uncertainty_shift.png"):
        assert (out / plot).stat().st_size > 0
    lines = (records / "uncertainty-digits.jsonl").read_text().splitlines()
    assert len(lines) == 4 and json.loads(lines[0])["size"] == "quick"
    assert all(run["backend"] and run["keras"] and run["command"] for run in runs)
    # A second run starts no worker and rebuilds the report.
    (out / "RESULTS_UNCERTAINTY.md").unlink()
    monkeypatch.setattr(study.subprocess, "Popen", pytest.fail)
    uncertainty.main(argv)
    assert (out / "RESULTS_UNCERTAINTY.md").exists()


def test_keys_are_those_of_the_records():
    options = uncertainty.parse(["--datasets", "fashion_mnist", "--methods", "agrlearn_best"])
    (spec,) = uncertainty.specs(options)[:1]
    assert uncertainty.STUDY.key_of(spec) == (
        "dataset=fashion_mnist|method=agrlearn_best|seed=0|n=3|width=2.0|epochs=30|channels=32|"
        "batch_size=128|lr=0.001|size=full|train_images=5000|shift_images=2000"
    )
    records = study.load_records(study.ROOT / "docs" / "results" / "uncertainty")
    assert uncertainty.STUDY.key_of(spec) in records
