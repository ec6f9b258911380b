"""`Settings`: the options `wrap` settles once and passes down, in one frozen object.

`wrap` validates its arguments, settles every default and builds one
`Settings`; the walker, `Aggregate`, `Deaggregate`, the feature mixing layer,
the stem, the FLOP counter and `AgrLearnHyperModel` read their options from
it, so that no option is settled twice or travels as a loose dict.

`SAVED_BEFORE_1_0` is the one table of what a saved layer config without an
option meant: the defaults before 1.0, so a layer saved then behaves as it
did. Each layer fills in the entries it takes (`saved_config`).
"""

import dataclasses

from keras_agrlearn import _defaults

# What a saved config without these keys meant: the defaults before 1.0.
SAVED_BEFORE_1_0 = {"inference": "group", "repetition": 0.0, "batch_repetition": 1}


@dataclasses.dataclass(frozen=True)
class Settings:
    """The settled options of one AgrLearn model (see `wrap` for each).

    Every field holds a validated value, never None: `wrap` settles the
    defaults before building this object.
    """

    n: int = _defaults.N
    width: float = _defaults.WIDTH
    inference: str = _defaults.INFERENCE
    shuffle: bool = False
    repetition: float = 0.0
    batch_repetition: int = _defaults.BATCH_REPETITION
    objective: str = _defaults.OBJECTIVE
    mixing: str = _defaults.MIXING
    mixing_alpha: float = _defaults.MIXING_ALPHA
    mixing_prob: float = _defaults.MIXING_PROB
    mixing_root: float = _defaults.MIXING_ROOT
    draws: int = 4
    seed: int | None = None

    def aggregate_options(self):
        """The keyword arguments of `Aggregate`, without `axis`."""
        return {
            "inference": self.inference,
            "shuffle": self.shuffle,
            "repetition": self.repetition,
            "batch_repetition": self.batch_repetition,
            "draws": self.draws,
            "seed": self.seed,
        }

    def deaggregate_options(self):
        """The keyword arguments of `Deaggregate`, without `axis`."""
        return {"inference": self.inference, "objective": self.objective}

    def mixing_options(self):
        """The keyword arguments of `MixedEncoders`, without the layer and axes."""
        return {
            "mixing": self.mixing,
            "alpha": self.mixing_alpha,
            "prob": self.mixing_prob,
            "root": self.mixing_root,
            "seed": self.seed,
        }

    @property
    def mixes(self):
        """Whether the first channel-mixing layer becomes `MixedEncoders`."""
        return self.mixing != "sum" and self.n > 1


def saved_config(config, keys):
    """`config` with the pre-1.0 meaning of any of `keys` it lacks filled in."""
    return {**{key: SAVED_BEFORE_1_0[key] for key in keys}, **config}
