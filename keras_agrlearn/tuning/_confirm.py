"""`confirm`: the best plain and the best aggregated trial, retrained over paired seeds."""

import json
import os

import keras
import numpy as np

from keras_agrlearn._comparison import paired_comparison
from keras_agrlearn._evaluation import evaluate_uncertainty
from keras_agrlearn.tuning._leaderboard import leaderboard

RECORDS = "confirm.jsonl"
REPORT = "verdict.md"
_ROLES = ("plain", "aggregated")


def confirm(
    tuner,
    x,
    y,
    *,
    validation_data,
    holdout_data,
    seeds,
    epochs,
    batch_size=None,
    from_logits=False,
    first_seed=0,
    directory=None,
    verbose=0,
):
    """Retrains the best n=1 and the best n>1 trial over paired seeds.

    A search ends with one best trial on one seed, which cannot say whether
    the winner is better than the plain network or only luckier. This step
    takes, from the tuner's completed trials, the best trial with `n=1`
    (the plain network, at its best width and optimizer settings) and the
    best with `n > 1`, and trains each anew `seeds` times: seed
    `first_seed + i` for both (a pair), with the hypermodel's own `fit`, so
    each gets its training-FLOP cap and learning-rate schedule as in the
    search. Every model is scored on `holdout_data`, data the search did not
    score, raw and tempered: one temperature is fitted on `validation_data`
    per model (`evaluate_uncertainty(..., validation_data=...)`). The
    paired differences, aggregated minus plain, in accuracy and tempered NLL
    come with their 95 % t intervals over seeds and a verdict
    (`keras_agrlearn.paired_comparison`): "aggregation helps", "no
    difference shown" or "plain is better".

    Each trained model's scores are appended to `confirm.jsonl` in
    `directory` as soon as they exist, so a stopped run resumes: pairs
    already recorded (for the same trial and hyperparameters) are not
    trained again. The report is written to `verdict.md` beside it.

    Args:
        tuner: a `keras_tuner.Tuner` that searched an `AgrLearnHyperModel`
            with `1` and at least one `n > 1` among the choices, with at
            least one completed trial of each.
        x: the training inputs of the search.
        y: the training labels of the search.
        validation_data: `(x_val, y_val)`, the data the temperature is
            fitted on (the search's validation data will do).
        holdout_data: `(x_holdout, y_holdout)`, data neither the search nor
            the temperature saw: the scores come from it.
        seeds: int >= 2, the number of paired seeds.
        epochs: int >= 1, the `epochs` the search was given (the trials'
            FLOP caps follow from it).
        batch_size: int or None, the batch size of the search. Defaults to
            None (Keras' default, 32).
        from_logits: bool, whether the models output logits. Defaults to
            `False`.
        first_seed: int, the seed of the first pair. Defaults to `0`.
        directory: str or None, where the records and the report go.
            Defaults to the tuner's project directory.
        verbose: the `verbose` of `fit`. Defaults to `0`.

    Returns:
        A dict with `"plain"` and `"aggregated"` (each: `"trial"`,
        `"hyperparameters"`, `"epochs"`, `"training_flops"` and
        `"relative_training_flops"` (per training sample, as in the
        leaderboard), `"inference_flops"`, and the per-seed `"accuracy"`,
        `"nll"`, `"tempered_nll"` and `"temperature"` lists), `"comparison"`
        (what `paired_comparison` returns for accuracy and tempered NLL),
        `"verdict"` and `"report"` (the Markdown text of `verdict.md`).

    Raises:
        TypeError: if `seeds` or `epochs` is not an int.
        ValueError: if `seeds` is below 2, `epochs` below 1, or the search
            has no completed trial with `n=1` or none with `n > 1`.

    Example:

    >>> result = confirm(  # doctest: +SKIP
    ...     tuner, x_train, y_train, validation_data=(x_val, y_val),
    ...     holdout_data=(x_test, y_test), seeds=5, epochs=20)
    >>> result["verdict"]  # doctest: +SKIP
    'no difference shown'
    """
    seeds = _count("seeds", seeds, 2, "paired seeds; an interval over seeds needs at least 2")
    epochs = _count("epochs", epochs, 1, "the epochs the search was given")
    hypermodel = tuner.hypermodel
    trials = _best_trials(tuner)
    directory = tuner.project_dir if directory is None else directory
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, RECORDS)
    records = _load(path)
    x_holdout, y_holdout = holdout_data
    for index in range(seeds):
        seed = first_seed + index
        for role in _ROLES:
            trial = trials[role]
            key = _key(role, trial, seed)
            if key in records:
                continue
            keras.utils.set_random_seed(seed)
            hp = trial.hyperparameters.copy()
            model = hypermodel.build(hp)
            history = hypermodel.fit(
                hp, model, x, y, epochs=epochs, batch_size=batch_size, verbose=verbose
            )
            scores = evaluate_uncertainty(
                model,
                x_holdout,
                y_holdout,
                validation_data=validation_data,
                batch_size=batch_size,
                from_logits=from_logits,
            )
            costs = {name: values[-1] for name, values in history.history.items()}
            record = {
                **_key_fields(role, trial, seed),
                **{name: scores[name] for name in ("accuracy", "nll", "tempered_nll")},
                "temperature": scores["temperature"],
                **{name: costs.get(name) for name in _COSTS},
            }
            with open(path, "a") as f:
                f.write(json.dumps(record) + "\n")
            records[key] = record
    result = {}
    for role in _ROLES:
        trial = trials[role]
        rows = [records[_key(role, trial, first_seed + i)] for i in range(seeds)]
        result[role] = {
            "trial": trial.trial_id,
            "hyperparameters": dict(trial.hyperparameters.values),
            **{name: rows[0][name] for name in _COSTS},
            **{name: [row[name] for row in rows] for name in _SCORES},
        }
    comparison = paired_comparison(
        {"accuracy": result["plain"]["accuracy"], "nll": result["plain"]["tempered_nll"]},
        {
            "accuracy": result["aggregated"]["accuracy"],
            "nll": result["aggregated"]["tempered_nll"],
        },
    )
    result["comparison"] = comparison
    result["verdict"] = comparison["verdict"]
    result["report"] = _format_report(result, len(np.asarray(y_holdout)))
    with open(os.path.join(directory, REPORT), "w") as f:
        f.write(result["report"])
    return result


_COSTS = ("epochs", "training_flops", "relative_training_flops", "inference_flops")
_SCORES = ("accuracy", "nll", "tempered_nll", "temperature")


def _key_fields(role, trial, seed):
    return {
        "role": role,
        "trial": trial.trial_id,
        "hyperparameters": dict(trial.hyperparameters.values),
        "seed": seed,
    }


def _key(role, trial, seed):
    return json.dumps(_key_fields(role, trial, seed), sort_keys=True)


def _load(path):
    """The records of earlier runs, by key; a line cut off by a stop is dropped."""
    records = {}
    if not os.path.exists(path):
        return records
    with open(path) as f:
        for line in f:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            fields = {name: record[name] for name in ("role", "trial", "hyperparameters", "seed")}
            records[json.dumps(fields, sort_keys=True)] = record
    return records


def _best_trials(tuner):
    """The best completed trial with n=1 and the best with n > 1."""
    oracle = tuner.oracle
    best = {}
    for row in leaderboard(tuner):
        if row["score"] is None or row["n"] is None:
            continue
        role = "plain" if row["n"] == 1 else "aggregated"
        best.setdefault(role, oracle.trials[row["trial"]])
    for role, wanted in (("plain", "n=1"), ("aggregated", "n > 1")):
        if role not in best:
            raise ValueError(
                f"Argument `tuner`: the search has no completed trial with {wanted}; "
                "confirm compares the best plain (n=1) trial with the best "
                "aggregated (n > 1) one, so the search space needs both and "
                "each needs a completed trial."
            )
    return best


def _count(name, value, minimum, meaning):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(
            f"Argument `{name}` ({meaning}) must be an integer >= {minimum}, got "
            f"{value!r} of type {type(value).__name__}."
        )
    if value < minimum:
        raise ValueError(
            f"Argument `{name}` ({meaning}) must be an integer >= {minimum}, got {name}={value}."
        )
    return int(value)


def _format_report(result, holdout_size):
    """The Markdown report of `confirm`: the two configurations, the differences, the verdict."""
    comparison = result["comparison"]
    lines = [
        f"Confirmation over {comparison['seeds']} paired seeds, scored on "
        f"{holdout_size} held-out samples the search did not score "
        "(temperature fitted on the validation data).",
        "",
        "| configuration | trial | n | width | learning rate | weight decay | epochs "
        "| training MFLOPs per sample | training FLOPs x plain | inference MFLOPs "
        "| accuracy | tempered NLL | NLL | temperature |",
        "|:---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for role in _ROLES:
        config = result[role]
        values = config["hyperparameters"]
        lines.append(
            f"| {role} | {config['trial']} | {values.get('n')} | {values.get('width')} "
            f"| {_cell(values.get('learning_rate'), '.3g')} "
            f"| {_cell(values.get('weight_decay'), '.3g')} "
            f"| {_cell(config['epochs'], '.0f')} "
            f"| {_cell(config['training_flops'], '.3g', 1e6)} "
            f"| {_cell(config['relative_training_flops'], '.2f')} "
            f"| {_cell(config['inference_flops'], '.3g', 1e6)} "
            f"| {np.mean(config['accuracy']):.4f} | {np.mean(config['tempered_nll']):.4f} "
            f"| {np.mean(config['nll']):.4f} | {np.mean(config['temperature']):.2f} |"
        )
    lines += [
        "",
        "| aggregated - plain | mean | 95 % interval |",
        "|:---|---:|:---|",
    ]
    for name, label in (("accuracy", "accuracy"), ("nll", "tempered NLL")):
        row = comparison[name]
        lines.append(
            f"| {label} | {row['difference']:+.4f} | [{row['low']:+.4f}, {row['high']:+.4f}] |"
        )
    lines += ["", f"Verdict: {result['verdict']}."]
    return "\n".join(lines) + "\n"


def _cell(value, spec, scale=None):
    if value is None:
        return ""
    return format(value if scale is None else value / scale, spec)
