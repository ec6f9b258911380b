"""Trains one wrapped model in one process, or as one of two processes.

Run as

    python tests/multiprocess_helper.py BACKEND single
    python tests/multiprocess_helper.py BACKEND worker INDEX ADDRESSES

BACKEND is jax, tensorflow or torch. `single` trains on one CPU device with no
distribution (with `fit`, or with the loop below on PyTorch). `worker` is
process INDEX (0 or 1) of a two-process cluster with one CPU device each;
ADDRESSES is `127.0.0.1:PORT0,127.0.0.1:PORT1`:

- JAX: `keras.distribution.initialize(ADDRESSES, 2, INDEX)` joins JAX's
  distributed runtime (process 0 is the coordinator; CPU collectives over
  gloo), then `keras.distribution.DataParallel` shards every global batch
  over both processes' devices. Each process passes `fit` its own half of
  every global batch (`auto_shard_dataset=False`).
- TensorFlow: `TF_CONFIG` names both workers, and the model is built and
  compiled in the scope of `tf.distribute.MultiWorkerMirroredStrategy`.
  Keras 3.15's `fit` cannot run under that strategy with several workers
  (see `_train_multi_worker`), so a loop runs `model.train_step` on each
  replica, which is what `fit` does.
- PyTorch: Keras has no multi-process training of its own there. Both
  processes join a `torch.distributed` process group (gloo, its store on
  PORT0), and a PyTorch loop trains the wrapped model (a `torch.nn.Module`)
  inside `DistributedDataParallel`, each process on its half of every global
  batch. `single` runs the same loop without it.

Each mode trains the same model on the same global batches, then a fresh one
with a global batch that is not a multiple of n * devices, then (JAX only) one
with input repetition. The last line printed is a JSON object with the
per-epoch losses, the final weights and the `Aggregate` warnings raised by
each training.
"""

import json
import os
import sys
import warnings

BACKEND, MODE = sys.argv[1], sys.argv[2]
os.environ["KERAS_BACKEND"] = BACKEND
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if BACKEND == "jax":
    os.environ["JAX_PLATFORMS"] = "cpu"
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"
if MODE == "worker":
    INDEX = int(sys.argv[3])
    ADDRESSES = sys.argv[4]
    if BACKEND == "tensorflow":
        # Read by MultiWorkerMirroredStrategy when it is created.
        os.environ["TF_CONFIG"] = json.dumps(
            {
                "cluster": {"worker": ADDRESSES.split(",")},
                "task": {"type": "worker", "index": INDEX},
            }
        )

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_agrlearn import wrap  # noqa: E402

N = 2
PROCESSES = 2
# Two devices in all: a global batch of 32 gives each device 16 samples,
# 8 whole groups of n = 2; 30 gives each device 15 and splits a group.
BATCH_SIZE = 32
BROKEN_BATCH_SIZE = 30
SAMPLES = 128
EPOCHS = 3


def _data(samples):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(SAMPLES, 8)).astype("float32")
    y = np.argmax(x[:, :3], axis=1).astype("int32")
    return x[:samples], y[:samples]


def _model(repetition, mixing="sum"):
    keras.utils.set_random_seed(0)
    backbone = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    # One grouping per batch: only the deterministic layout can match one
    # process exactly (batch repetition draws its permutations at random).
    model = wrap(
        backbone,
        n=N,
        width=2.0,
        repetition=repetition,
        batch_repetition=1,
        mixing=mixing,
        # Mixing weighs each slot's loss by its share.
        objective="slots" if mixing != "sum" else None,
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss="sparse_categorical_crossentropy",
    )
    return model


def _join_jax_cluster():
    # The coordinator (process 0) listens on all interfaces unless told.
    os.environ["JAX_COORDINATOR_BIND_ADDRESS"] = ADDRESSES.split(",")[0]
    # The same seed in every process gives the same initial weights, and
    # `initialize` then needs no collective to agree on one.
    keras.utils.set_random_seed(0)
    keras.distribution.initialize(
        job_addresses=ADDRESSES, num_processes=PROCESSES, process_id=INDEX
    )
    import jax

    assert jax.process_count() == PROCESSES, jax.process_count()
    devices = keras.distribution.list_devices()
    assert len(devices) == PROCESSES, devices
    # The arrays given to `fit` are already this process's share.
    keras.distribution.set_distribution(
        keras.distribution.DataParallel(devices=devices, auto_shard_dataset=False)
    )


def _process_share(x, y, batch_size):
    """This process's half of every global batch, in order, and its size."""
    half = batch_size // PROCESSES
    mine = (np.arange(len(x)) % batch_size) // half == INDEX
    return x[mine], y[mine], half


def _train_multi_worker(strategy, x, y, batch_size, epochs, repetition, mixing):
    """Trains like `fit` under MultiWorkerMirroredStrategy; returns losses.

    Keras 3.15's `fit` fails there with two workers: it reduces a whole
    `(x, y)` batch with `strategy.reduce` to read its shapes, which raises
    "Attempt to convert a value (PerReplica...) with an unsupported type";
    and it averages each step's scalar logs with `strategy.reduce("MEAN",
    value, axis=0)`, which raises "Invalid reduction dimension 0 for input
    with 0 dimensions". `train_step` (the forward pass, the loss scaled for
    the replicas, the all-reduced gradients, the loss tracker) works as is.
    """
    import tensorflow as tf

    with strategy.scope():
        model = _model(repetition, mixing)
    # Whole batches have a static size, so Aggregate checks each replica's
    # share exactly.
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size, drop_remainder=True)
    batches = strategy.experimental_distribute_dataset(dataset)

    @tf.function
    def step(batch):
        strategy.run(model.train_step, args=(batch,))

    losses = []
    for _ in range(epochs):
        model.reset_metrics()
        for batch in batches:
            step(batch)
        losses.append(float(model.get_metrics_result()["loss"]))
    return model, losses


def _train_torch(x, y, batch_size, epochs, repetition, mixing):
    """Trains with a PyTorch loop, under DistributedDataParallel as a worker."""
    import torch

    model = _model(repetition, mixing)
    network = model
    if MODE == "worker":
        network = torch.nn.parallel.DistributedDataParallel(model)
        x, y, batch_size = _process_share(x, y, batch_size)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss_fn = keras.losses.SparseCategoricalCrossentropy()
    losses = []
    for _ in range(epochs):
        total = []
        for start in range(0, len(x), batch_size):
            optimizer.zero_grad()
            # The wrapped model groups samples only when told it trains.
            outputs = network(torch.from_numpy(x[start : start + batch_size]), training=True)
            loss = loss_fn(torch.from_numpy(y[start : start + batch_size]), outputs)
            loss.backward()
            optimizer.step()
            total.append(loss.item())
        losses.append(float(np.mean(total)))
    if MODE == "worker":
        # Each process saw half of every batch: the global loss is the mean.
        losses = torch.tensor(losses, dtype=torch.float64)
        torch.distributed.all_reduce(losses)
        losses = (losses / PROCESSES).tolist()
    return model, losses


def _fit(strategy, batch_size, samples, epochs, repetition=0.0, mixing="sum"):
    """Trains a fresh model; returns it, its losses and Aggregate's warnings."""
    x, y = _data(samples)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if BACKEND == "torch":
            model, losses = _train_torch(x, y, batch_size, epochs, repetition, mixing)
        elif strategy is not None:
            model, losses = _train_multi_worker(
                strategy, x, y, batch_size, epochs, repetition, mixing
            )
        else:
            if MODE == "worker":
                x, y, batch_size = _process_share(x, y, batch_size)
            model = _model(repetition, mixing)
            history = model.fit(
                x, y, batch_size=batch_size, epochs=epochs, shuffle=False, verbose=0
            )
            losses = [float(v) for v in history.history["loss"]]
    messages = [str(w.message) for w in caught if "Aggregate(" in str(w.message)]
    return model, losses, messages


def _weights(model):
    return [keras.ops.convert_to_numpy(w).ravel().tolist() for w in model.weights]


def main():
    strategy = None
    if MODE == "worker" and BACKEND == "jax":
        _join_jax_cluster()
    elif MODE == "worker" and BACKEND == "torch":
        import torch

        torch.distributed.init_process_group(
            "gloo",
            init_method=f"tcp://{ADDRESSES.split(',')[0]}",
            rank=INDEX,
            world_size=PROCESSES,
        )
    elif MODE == "worker":
        import tensorflow as tf

        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        assert strategy.num_replicas_in_sync == PROCESSES, strategy.num_replicas_in_sync
    model, losses, kept = _fit(strategy, BATCH_SIZE, SAMPLES, EPOCHS)
    outcome = {
        "losses": losses,
        "weights": _weights(model),
        "kept_warnings": kept,
    }
    # 120 samples: four global batches of 30, each split evenly.
    _, outcome["broken_losses"], outcome["broken_warnings"] = _fit(
        strategy, BROKEN_BATCH_SIZE, 120, 1
    )
    # Feature mixing draws its ratios and masks per group.
    model, outcome["mixing_losses"], _ = _fit(strategy, BATCH_SIZE, 64, 2, mixing="cut")
    outcome["mixing_weights"] = _weights(model)
    if BACKEND == "jax":
        # Input repetition draws a random plan over the global batch.
        model, _, _ = _fit(strategy, BATCH_SIZE, 64, 1, repetition=0.5)
        outcome["repetition_weights"] = _weights(model)
    if MODE == "worker" and BACKEND == "torch":
        import torch

        torch.distributed.destroy_process_group()
    return outcome


if __name__ == "__main__":
    print(json.dumps(main()))
