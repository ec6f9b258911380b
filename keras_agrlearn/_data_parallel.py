"""Whether data parallelism splits `Aggregate`'s groups across devices.

Groups must not span devices: a group is one row of the aggregated batch, and
data parallelism shards rows. Two kinds of data parallelism reach the layer
differently, and both are checked here, with one policy: a layer warns once
(see `Aggregate.call`), with the rule that keeps groups whole.

- Under `keras.distribution.DataParallel` the layer sees the global batch,
  which is sharded afterwards: unless it is a multiple of `n * devices`,
  groups span devices.
- Under a `tf.distribute` strategy each replica runs the layer on its own
  share of the global batch. A share that is not a multiple of `n` is
  completed cyclically within the replica, so training differs from one
  device. The share is usually unknown while the step is traced (the last
  batch of an epoch may be smaller); then the warning states the rule
  instead of a detected break.

This is the library's only backend-specific code: TensorFlow is already
loaded whenever it is the Keras backend, and the library never imports it
itself.
"""

import sys

import keras


def split_warning(batch, n):
    """The warning to give for `batch` samples grouped by `n`, or None."""
    replicas = _tensorflow_replicas()
    if replicas > 1:
        return _replica_warning(batch, n, replicas)
    return _device_warning(batch, n)


def _device_warning(batch, n):
    distribution = keras.distribution.distribution()
    if distribution is None or not isinstance(batch, int):
        return None
    mesh = distribution.device_mesh
    batch_axis = getattr(distribution, "batch_dim_name", None)
    if batch_axis not in mesh.axis_names:
        return None
    devices = mesh.shape[mesh.axis_names.index(batch_axis)]
    if devices <= 1 or batch % (n * devices) == 0:
        return None
    return (
        f"Aggregate(n={n}): the per-device batch is not a multiple of n "
        f"(global batch {batch} on {devices} devices), so groups span devices. "
        f"Use a global batch size that is a multiple of n * devices = "
        f"{n * devices}."
    )


def _replica_warning(batch, n, replicas):
    rule = f"Use a global batch size that is a multiple of n * replicas = {n * replicas}."
    if isinstance(batch, int):
        if batch % n == 0:
            return None
        return (
            f"Aggregate(n={n}): the per-device batch is not a multiple of n "
            f"({batch} samples on each of {replicas} replicas), so groups are "
            f"completed within each device and training differs from one "
            f"device. {rule}"
        )
    return (
        f"Aggregate(n={n}) runs on {replicas} tf.distribute replicas, which "
        "each group their own share of the batch; the per-device batch is not "
        "known when the step is traced, so it cannot be checked. Training "
        "matches one device only when the per-device batch is a multiple of "
        f"n. {rule}"
    )


def _tensorflow_replicas():
    """Replicas in sync when a `tf.distribute` strategy runs this call, else 1."""
    if keras.backend.backend() != "tensorflow":
        return 1
    tf = sys.modules.get("tensorflow")
    if tf is None or not tf.distribute.has_strategy():
        return 1
    context = tf.distribute.get_replica_context()
    return 1 if context is None else context.num_replicas_in_sync
