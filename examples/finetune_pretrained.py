"""Fine-tuning a pretrained keras-hub backbone: plain against AgrLearn.

The workflow end to end, offline:

1. Pretrain a small keras-hub ResNet classifier on five Fashion-MNIST classes
   (T-shirt, trouser, pullover, dress, coat) and save it with
   `save_to_preset(dir)`, as a published keras-hub preset is saved.
2. Load the preset twice with `ImageClassifier.from_preset(dir,
   num_classes=5)` (a local directory: nothing is downloaded; a new
   `num_classes` gives a new head on the pretrained backbone).
3. Fine-tune on the other five classes (sandal, shirt, sneaker, bag, ankle
   boot) with few labels, 50 per class by default, with the same two-phase
   recipe and the same `compile` and `fit` calls: the body frozen
   (`backbone.trainable = False`, then `compile`) while the new layers learn,
   then everything with a lower learning rate (`backbone.trainable = True`,
   then `compile` again). Once as the keras-hub classifier with its new head
   (plain fine-tuning), once wrapped with `keras_agrlearn.wrap(classifier,
   n=2, strategy="stem")`, which keeps the pretrained body and its weights
   and puts an `n * C -> C` stem projection in front of it and a new `n * K`
   head on it.
4. Print test accuracy and negative log-likelihood of both.

The full run takes about 4.5 minutes on two CPU cores with JAX.

The grey images are repeated on three channels, as for an image backbone
pretrained on colour photos. Fashion-MNIST is read from the IDX files of
Debian's `dataset-fashion-mnist` package (`apt install dataset-fashion-mnist`)
or from `--data-dir`.

    KERAS_BACKEND=jax python examples/finetune_pretrained.py
    KERAS_BACKEND=jax python examples/finetune_pretrained.py --quick   # a smoke test
"""

import argparse
import gzip
import tempfile
from pathlib import Path

import keras
import keras_hub
import numpy as np

import keras_agrlearn

DATA_DIR = "/usr/share/datasets/fashion-mnist"
PRETRAIN_CLASSES = (0, 1, 2, 3, 4)
FINETUNE_CLASSES = (5, 6, 7, 8, 9)


def read_idx(path):
    """One IDX file of unsigned bytes (the MNIST format), gzipped or not."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if data[:3] != b"\x00\x00\x08":
        raise ValueError(f"{path} is not an IDX file of unsigned bytes.")
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


def load_fashion_mnist(data_dir=DATA_DIR):
    """`(x_train, y_train), (x_test, y_test)`: uint8 images `(N, 28, 28)`, labels."""
    arrays = []
    for name in ("train-images-idx3", "train-labels-idx1", "t10k-images-idx3", "t10k-labels-idx1"):
        found = sorted(Path(data_dir).glob(f"{name}-ubyte*"))
        if not found:
            raise FileNotFoundError(
                f"Fashion-MNIST file {name}-ubyte(.gz) not found in {data_dir}. "
                "Install Debian's `dataset-fashion-mnist` package, or pass "
                "`--data-dir` a directory holding the four IDX files."
            )
        arrays.append(read_idx(found[0]))
    return (arrays[0], arrays[1]), (arrays[2], arrays[3])


def select(x, y, classes, per_class=None, seed=0):
    """Images of `classes` as `(N, 28, 28, 3)` floats in [0, 1], labels 0..4."""
    rng = np.random.default_rng(seed)
    index = []
    for c in classes:
        found = np.flatnonzero(y == c)
        index.append(found if per_class is None else rng.choice(found, per_class, replace=False))
    index = rng.permutation(np.concatenate(index))
    images = np.repeat(x[index, :, :, None], 3, axis=-1).astype("float32") / 255.0
    labels = np.searchsorted(classes, y[index]).astype("int32")
    return images, labels


def resnet_classifier(num_classes):
    """A small ResNet (two stacks of one basic block) as a keras-hub classifier."""
    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64],
        input_conv_kernel_sizes=[3],
        stackwise_num_filters=[64, 128],
        stackwise_num_blocks=[1, 1],
        stackwise_num_strides=[1, 2],
        block_type="basic_block",
        use_pre_activation=False,
        image_shape=(28, 28, 3),
    )
    return keras_hub.models.ResNetImageClassifier(backbone=backbone, num_classes=num_classes)


def keras_model(task):
    """The layer graph of a keras-hub task as a plain `keras.Model`: same layers, same weights.

    `Task.fit` batches NumPy arrays into a dataset for the task's preprocessor
    and does not reshuffle it between epochs; a plain Keras model reshuffles
    every epoch, as the wrapped model does, so both models see the same data
    order treatment.
    """
    return keras.Model(task.inputs, task.outputs, name=f"{task.name}_graph")


def compile_model(model, learning_rate):
    # keras-hub classifier heads return logits, and so do the wrapped ones.
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy", keras_agrlearn.NegativeLogLikelihood(from_logits=True)],
    )


def fine_tune(model, backbone, data, args):
    """Two phases: new layers on the frozen body, then everything.

    `model` is the model to train, `backbone` the pretrained body inside it;
    every change of `trainable` takes effect at the next `compile`. Returns
    test accuracy and NLL.
    """
    (x, y), (x_test, y_test) = data
    backbone.trainable = False
    compile_model(model, 1e-3)
    model.fit(x, y, batch_size=args.batch_size, epochs=args.epochs, verbose=0)
    backbone.trainable = True
    compile_model(model, 1e-4)
    model.fit(x, y, batch_size=args.batch_size, epochs=args.epochs, verbose=0)
    _, accuracy, nll = model.evaluate(x_test, y_test, batch_size=500, verbose=0)
    return accuracy, nll


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=DATA_DIR, help="directory of the IDX files")
    parser.add_argument("--preset-dir", help="where to save the preset (default: a temporary one)")
    parser.add_argument("--pretrain-epochs", type=int, default=4)
    parser.add_argument("--per-class", type=int, default=50, help="labels per fine-tuning class")
    parser.add_argument("--epochs", type=int, default=30, help="epochs of each fine-tuning phase")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--n", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="a few hundred images, one epoch each")
    args = parser.parse_args(argv)
    (x, y), (x_test, y_test) = load_fashion_mnist(args.data_dir)
    if args.quick:
        x, y, x_test, y_test = x[:600], y[:600], x_test[:200], y_test[:200]
        args.pretrain_epochs, args.epochs, args.per_class = 1, 1, min(args.per_class, 5)

    keras.utils.set_random_seed(args.seed)
    pretrain_x, pretrain_y = select(x, y, PRETRAIN_CLASSES, seed=args.seed)
    pretrained = resnet_classifier(len(PRETRAIN_CLASSES))
    pretraining = keras_model(pretrained)
    compile_model(pretraining, 1e-3)
    pretraining.fit(pretrain_x, pretrain_y, batch_size=128, epochs=args.pretrain_epochs, verbose=0)
    pretest = select(x_test, y_test, PRETRAIN_CLASSES, seed=args.seed)
    _, pretrain_accuracy, _ = pretraining.evaluate(*pretest, batch_size=500, verbose=0)
    print(
        f"pretrained on classes {PRETRAIN_CLASSES} ({len(pretrain_x)} images, "
        f"{args.pretrain_epochs} epochs): test accuracy {pretrain_accuracy:.4f}"
    )

    classes = len(FINETUNE_CLASSES)
    with tempfile.TemporaryDirectory() as scratch:
        preset = args.preset_dir or str(Path(scratch) / "fashion_resnet")
        pretrained.save_to_preset(preset)
        data = (
            select(x, y, FINETUNE_CLASSES, args.per_class, seed=args.seed),
            select(x_test, y_test, FINETUNE_CLASSES, seed=args.seed),
        )
        results = {}
        keras.utils.set_random_seed(args.seed)
        plain = keras_hub.models.ImageClassifier.from_preset(preset, num_classes=classes)
        results["plain"] = fine_tune(keras_model(plain), plain.backbone, data, args)

        keras.utils.set_random_seed(args.seed)
        classifier = keras_hub.models.ImageClassifier.from_preset(preset, num_classes=classes)
        model = keras_agrlearn.wrap(classifier, n=args.n, strategy="stem", seed=args.seed)
        results["agrlearn"] = fine_tune(model, classifier.backbone, data, args)

    print(
        f"fine-tuned on classes {FINETUNE_CLASSES} with {args.per_class} labels per class, "
        f"{args.epochs} + {args.epochs} epochs, tested on {len(data[1][0])} images:"
    )
    names = {"plain": "plain (new head)", "agrlearn": f"AgrLearn n={args.n}, strategy='stem'"}
    for key, (accuracy, nll) in results.items():
        print(f"  {names[key]:<30} test accuracy {accuracy:.4f}, NLL {nll:.3f}")
    return results


if __name__ == "__main__":
    main()
