"""The library's defaults, in one place.

`wrap`, `Aggregate`, `Deaggregate` and `AgrLearnHyperModel` read their
defaults from here, so an argument means the same thing wherever it appears.
docs/RESULTS.md says which measurements chose them.
"""

import math

# Samples per forward pass.
N = 3
# Test protocol: each sample fills all n slots; its prediction depends on it alone.
INFERENCE = "replicate"
# Share of training samples that fill all n slots of a group of their own.
REPETITION = 0.5
# Training loss on the mean of a sample's slots ("mean") or on each slot ("slots").
OBJECTIVE = "mean"


def width_for(n):
    """The default hidden width multiplier for `n`: sqrt(n), two decimals."""
    return round(math.sqrt(n), 2)


def batch_repetition_for(n):
    """The default number of groupings of each batch per training step."""
    return n
