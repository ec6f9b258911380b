"""IMDB sentiment classification: a plain text classifier against AgrLearn.

Reviews come from tensorflow-datasets (`imdb_reviews`), are turned into token
ids by `keras.layers.TextVectorization`, and go through a CNN or LSTM backbone:
`Embedding -> Conv1D -> GlobalMaxPooling1D` or `Embedding -> LSTM`, with a
softmax head. `wrap` aggregates n reviews after their embeddings (token ids
cannot be concatenated, their embeddings can) and predicts the n labels.

Run (any backend; the first run downloads IMDB, about 80 MB):

    KERAS_BACKEND=jax python examples/text_classification.py --backbone cnn --n 2 --width 2

Token ids are computed once, outside the models, so the same arrays feed both
models on every backend (`TextVectorization` itself runs on TensorFlow).
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_agrlearn import wrap  # noqa: E402

CLASSES = 2


def load_imdb(train_size=None, test_size=None, data_dir=None):
    """Loads IMDB reviews as numpy arrays.

    Args:
        train_size: int or None, the number of training reviews (all 25000 by
            default).
        test_size: int or None, the number of test reviews (all 25000 by
            default).
        data_dir: str or None, the tensorflow-datasets data directory.

    Returns:
        `((train_texts, train_labels), (test_texts, test_labels))`: texts as
        an object array of Python `str`, labels as int32 (1 = positive).
    """
    import tensorflow_datasets as tfds

    splits = [
        "train" if train_size is None else f"train[:{train_size}]",
        "test" if test_size is None else f"test[:{test_size}]",
    ]
    datasets = tfds.load("imdb_reviews", split=splits, as_supervised=True, data_dir=data_dir)
    return tuple(_to_arrays(dataset) for dataset in datasets)


def _to_arrays(dataset):
    import tensorflow_datasets as tfds

    texts, labels = [], []
    for text, label in tfds.as_numpy(dataset):
        texts.append(text.decode("utf-8"))
        labels.append(label)
    return np.array(texts, dtype=object), np.array(labels, dtype="int32")


def vectorize(train_texts, *others, vocabulary=20000, length=200):
    """Token ids `(count, length)` for each text array, vocabulary from the first.

    Returns:
        A tuple of int32 arrays, one per argument, and the vocabulary size.
    """
    vectorizer = keras.layers.TextVectorization(
        max_tokens=vocabulary, output_sequence_length=length
    )
    vectorizer.adapt(list(train_texts))
    ids = tuple(
        keras.ops.convert_to_numpy(vectorizer(list(texts))).astype("int32")
        for texts in (train_texts,) + others
    )
    return ids, vectorizer.vocabulary_size()


def backbone(kind, vocabulary, length, embedding=64, hidden=64):
    """The per-sample text classifier: token ids in, class probabilities out.

    Args:
        kind: `"cnn"` or `"lstm"`.
        vocabulary: int, the number of token ids.
        length: int, the number of tokens per review.
        embedding: int, the embedding size. Defaults to `64`.
        hidden: int, the filters or units of the hidden layer. Defaults to `64`.

    Returns:
        A Functional `keras.Model`.
    """
    inputs = keras.Input((length,), dtype="int32", name="tokens")
    x = keras.layers.Embedding(vocabulary, embedding, name="embedding")(inputs)
    if kind == "cnn":
        x = keras.layers.Conv1D(hidden, 5, activation="relu", name="conv")(x)
        x = keras.layers.GlobalMaxPooling1D()(x)
    elif kind == "lstm":
        x = keras.layers.LSTM(hidden, name="lstm")(x)
    else:
        raise ValueError(f"Argument `kind` must be 'cnn' or 'lstm', got {kind!r}.")
    x = keras.layers.Dropout(0.5)(x)
    outputs = keras.layers.Dense(CLASSES, activation="softmax", name="head")(x)
    return keras.Model(inputs, outputs, name=f"imdb_{kind}")


def train_and_evaluate(model, train, test, epochs, batch_size, seed=0):
    """Compiles, trains and returns the test accuracy of `model`."""
    keras.utils.set_random_seed(seed)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(*train, batch_size=batch_size, epochs=epochs, shuffle=True, verbose=0)
    return model.evaluate(*test, batch_size=batch_size, verbose=0, return_dict=True)["accuracy"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", choices=["cnn", "lstm"], default="cnn")
    parser.add_argument("--n", type=int, default=2, help="samples per forward pass")
    parser.add_argument("--width", type=float, default=2.0)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--train-size", type=int, default=None)
    parser.add_argument("--test-size", type=int, default=None)
    parser.add_argument("--vocabulary", type=int, default=20000)
    parser.add_argument("--length", type=int, default=200)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args(argv)

    (train_texts, train_labels), (test_texts, test_labels) = load_imdb(
        args.train_size, args.test_size, args.data_dir
    )
    (train_ids, test_ids), vocabulary = vectorize(
        train_texts, test_texts, vocabulary=args.vocabulary, length=args.length
    )
    train, test = (train_ids, train_labels), (test_ids, test_labels)
    plain = backbone(args.backbone, vocabulary, args.length)
    agrlearn = wrap(plain, n=args.n, width=args.width)
    results = {
        "plain": train_and_evaluate(plain, train, test, args.epochs, args.batch_size),
        f"agrlearn n={args.n} width={args.width}": train_and_evaluate(
            agrlearn, train, test, args.epochs, args.batch_size
        ),
    }
    for name, accuracy in results.items():
        print(f"{args.backbone} {name}: test accuracy {accuracy:.4f}")
    return results


if __name__ == "__main__":
    main()
