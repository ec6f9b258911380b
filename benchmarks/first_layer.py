"""Profile: what the first convolution costs with n * C input channels.

In replicate inference at width 1, the wrapped network differs from the plain
backbone in two layers only: the first convolution reads n * C channels
instead of C, and the head has n * K outputs. This script times, per backend,
`predict` of the backbone's first convolution alone, fed C and n * C channels,
next to `predict` of the whole backbone, with the same interleaved medians as
throughput.py. The growth of the first layer's time, as a share of the whole
backbone's time, is the replicate overhead that no aggregation code can remove.

    KERAS_BACKEND=jax python benchmarks/first_layer.py --out first_layer_jax.json
"""

import argparse
import json
import os
import statistics
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import throughput  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ints = lambda text: [int(v) for v in text.split(",")]  # noqa: E731
    parser.add_argument("--ns", default="2,3,4", type=ints)
    parser.add_argument("--image-shape", default="32,32,3", type=ints)
    parser.add_argument("--samples", type=int, default=768)
    parser.add_argument("--predict-batch", type=int, default=384)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    shape = tuple(args.image_shape)
    rng = np.random.default_rng(0)
    tasks = {}
    for name, build in (("cnn", throughput.small_cnn), ("resnet", throughput.resnet)):
        backbone = build(shape)
        x = rng.random((args.samples,) + shape, dtype=np.float32)
        tasks[name, "backbone", 1] = _predict(backbone, x, args.predict_batch)
        (first,) = [layer for layer in backbone.layers if isinstance(layer, keras.layers.Conv2D)][
            :1
        ]
        for n in [1] + args.ns:
            conv = keras.layers.Conv2D.from_config(first.get_config())
            wide = shape[:-1] + (shape[-1] * n,)
            model = keras.Sequential([keras.Input(wide), conv])
            x_wide = rng.random((args.samples,) + wide, dtype=np.float32)
            tasks[name, "first_conv", n] = _predict(model, x_wide, args.predict_batch)
    _, times = throughput.measure(tasks, args.repeats, warmup=1, seed=0)
    medians = {key: statistics.median(value) for key, value in times.items()}
    rows = []
    for name in ("cnn", "resnet"):
        whole = medians[name, "backbone", 1]
        base = medians[name, "first_conv", 1]
        for n in [1] + args.ns:
            conv = medians[name, "first_conv", n]
            rows.append(
                {
                    "backbone": name,
                    "n": n,
                    "backbone_s": whole,
                    "first_conv_s": conv,
                    "first_conv_share": conv / whole,
                    "added_share": (conv - base) / whole,
                }
            )
    with open(args.out, "w") as out:
        json.dump(
            {"backend": keras.backend.backend(), "args": vars(args), "rows": rows}, out, indent=1
        )
    for row in rows:
        print(
            f"{keras.backend.backend()} {row['backbone']} n={row['n']}: first conv "
            f"{row['first_conv_share']:.1%} of the backbone's predict CPU time, "
            f"+{row['added_share']:.1%} over n=1"
        )


def _predict(model, x, batch_size):
    return lambda: model.predict(x, batch_size=batch_size, verbose=0)


if __name__ == "__main__":
    main()
