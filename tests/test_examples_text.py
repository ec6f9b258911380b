"""examples/text_classification.py, offline: IMDB replaced by tfds mock data."""

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")

from script_loader import load_script  # noqa: E402


@pytest.fixture(scope="module")
def example():
    return load_script("examples/text_classification.py", "text_classification")


def test_imdb_loads_as_texts_and_labels(example):
    # Mock data ignores split slicing: every split holds `num_examples`.
    with tfds.testing.mock_data(num_examples=6):
        (train_texts, train_labels), (test_texts, test_labels) = example.load_imdb(4, 3)
    assert train_texts.shape == train_labels.shape == (6,)
    assert test_texts.shape == test_labels.shape == (6,)
    assert all(isinstance(text, str) for text in train_texts)
    assert train_labels.dtype == np.int32 and set(train_labels) <= {0, 1}


@pytest.mark.parametrize("kind", ["cnn", "lstm"])
def test_example_runs_end_to_end(example, kind, capsys):
    with tfds.testing.mock_data(num_examples=8):
        results = example.main(
            [
                "--backbone",
                kind,
                "--epochs",
                "1",
                "--batch-size",
                "4",
                "--length",
                "12",
                "--vocabulary",
                "50",
                "--n",
                "2",
                "--width",
                "1.5",
            ]
        )
    assert set(results) == {"plain", "agrlearn n=2 width=1.5"}
    assert all(0.0 <= accuracy <= 1.0 for accuracy in results.values())
    assert "test accuracy" in capsys.readouterr().out


def test_unknown_backbone_is_refused(example):
    with pytest.raises(ValueError, match=r"'cnn' or 'lstm'"):
        example.backbone("gru", 10, 5)
