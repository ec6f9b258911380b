"""Training batches in an order fixed by the seed, shared by the studies.

Every arm of a seed sees the same order of batches, so that differences
between arms are paired; a study that augments its data passes `augment`,
whose random draws are fixed per seed, epoch and batch.
"""

import math

import keras
import numpy as np


class OrderedBatches(keras.utils.PyDataset):
    """Batches of `(x, y)` in a seeded order, reshuffled every epoch.

    Args:
        x, y: the training arrays.
        batch_size: samples per batch.
        seed: the order's seed (with the epoch: `default_rng([seed, epoch])`).
        augment: None, or `augment(x_batch, rng) -> x_batch`, applied to each
            batch with `default_rng([seed, epoch, index, 7])`.
    """

    def __init__(self, x, y, batch_size, seed, augment=None):
        super().__init__()
        self.x, self.y, self.batch_size, self.seed = x, y, batch_size, seed
        self.augment = augment
        self.epoch = 0
        self.order = self._order()

    def _order(self):
        return np.random.default_rng([self.seed, self.epoch]).permutation(len(self.x))

    def __len__(self):
        return math.ceil(len(self.x) / self.batch_size)

    def __getitem__(self, index):
        rows = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        x = self.x[rows]
        if self.augment is not None:
            x = self.augment(x, np.random.default_rng([self.seed, self.epoch, index, 7]))
        return x, self.y[rows]

    def on_epoch_end(self):
        self.epoch += 1
        self.order = self._order()
