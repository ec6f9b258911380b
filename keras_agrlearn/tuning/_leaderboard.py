"""`leaderboard`: the trials of a search, best first."""


def leaderboard(tuner):
    """Lists the trials of an AgrLearn search, best score first.

    Completed trials come first, ordered by the tuner's objective (highest
    first for a maximised objective such as `val_accuracy`); trials that
    failed or are still running follow, without a score.

    Args:
        tuner: a `keras_tuner.Tuner` (or its `oracle`) that searched an
            `AgrLearnHyperModel`, in this process or reloaded from its
            directory.

    Returns:
        A list of dicts with keys `"trial"`, `"n"`, `"width"`,
        `"batch_repetition"`, `"repetition"`, `"learning_rate"`,
        `"weight_decay"`, `"score"` (None without one), `"epochs"` (the
        epochs the trial trained, up to its FLOP cap), `"forward_passes"`
        and `"training_flops"` (per training sample, over the trial's whole
        fit), `"relative_training_flops"` (the trial's training FLOPs divided by
        the plain network's at the search's `epochs`; about
        `training_budget` with equal compute), `"inference_flops"`
        (per prediction), `"fit_seconds"` and `"status"`; values a trial
        does not have are None.

    Example:

    >>> rows = leaderboard(tuner)  # doctest: +SKIP
    >>> best = rows[0]  # doctest: +SKIP
    >>> best["n"], best["width"], best["relative_training_flops"]  # doctest: +SKIP

    [docs/TUNING.md](../TUNING.md#a-search-on-mnist-1d) shows the leaderboard
    of a search on MNIST-1D.
    """
    oracle = getattr(tuner, "oracle", tuner)
    rows = []
    for trial in oracle.trials.values():
        values = trial.hyperparameters.values
        rows.append(
            {
                "trial": trial.trial_id,
                "n": values.get("n"),
                "width": values.get("width"),
                "batch_repetition": values.get("batch_repetition"),
                "repetition": values.get("repetition"),
                "learning_rate": values.get("learning_rate"),
                "weight_decay": values.get("weight_decay"),
                "score": trial.score,
                "epochs": _metric(trial, "epochs"),
                "forward_passes": _metric(trial, "forward_passes"),
                "training_flops": _metric(trial, "training_flops"),
                "relative_training_flops": _metric(trial, "relative_training_flops"),
                "inference_flops": _metric(trial, "inference_flops"),
                "fit_seconds": _metric(trial, "fit_seconds"),
                "status": str(trial.status),
            }
        )
    sign = -1.0 if oracle.objective.direction == "max" else 1.0
    rows.sort(
        key=lambda row: (
            row["score"] is None,
            0.0 if row["score"] is None else sign * row["score"],
            row["trial"],
        )
    )
    return rows


def _metric(trial, name):
    if not trial.metrics.exists(name):
        return None
    return trial.metrics.get_last_value(name)
