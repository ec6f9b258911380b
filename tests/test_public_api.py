"""The public API is what the packages export, and saved files keep loading.

The rule: the public modules are the subpackages `keras_agrlearn.metrics` and
`keras_agrlearn.tuning` and `keras_agrlearn.version` (pyproject.toml reads the
version from it); every other module's name starts with an underscore, so no
module hides behind, or is hidden by, an exported function of its name
(`keras_agrlearn.wrap` is the function). Each package's `__all__` lists
exactly its public attributes that are not modules. docs/api has a page for
each name (tests/test_docs_site.py).

Classes that can end up in a `.keras` file keep their registered names
(`keras_agrlearn>Aggregate`, ...), whatever module defines them now, so
files saved by earlier versions load.
"""

import importlib
import pkgutil
import types

import keras
import numpy as np
import pytest

import keras_agrlearn

PUBLIC_MODULES = {
    "keras_agrlearn": {"metrics", "tuning", "version"},
    "keras_agrlearn.metrics": set(),
    "keras_agrlearn.tuning": set(),
}

# Every class registered for `.keras` files, with the module that defined it
# before 1.0: configs saved then name that module.
REGISTERED = {
    "Aggregate": "keras_agrlearn.aggregate",
    "Deaggregate": "keras_agrlearn.deaggregate",
    "AgrLearnModel": "keras_agrlearn.model",
    "TileSlots": "keras_agrlearn.members",
    "SlotsToRows": "keras_agrlearn.members",
    "RowsToMembers": "keras_agrlearn.members",
    "BrierScore": "keras_agrlearn.metrics.brier_score",
    "ExpectedCalibrationError": "keras_agrlearn.metrics.expected_calibration_error",
    "NegativeLogLikelihood": "keras_agrlearn.metrics.negative_log_likelihood",
    # Added after 1.0: its module has always been the private one.
    "TemperatureScaling": "keras_agrlearn._temperature_scaling",
}
# Classes registered since, which no file saved before 1.0 holds.
REGISTERED_SINCE_1_0 = {"MixedEncoders"}


def _package(name):
    if name == "keras_agrlearn.tuning":
        pytest.importorskip("keras_tuner")
    return importlib.import_module(name)


def _import_everything():
    """Imports every module of the library, as a user's code might."""
    pytest.importorskip("keras_tuner")
    for info in pkgutil.walk_packages(keras_agrlearn.__path__, "keras_agrlearn."):
        importlib.import_module(info.name)


@pytest.mark.parametrize("package_name", sorted(PUBLIC_MODULES))
def test_only_the_listed_modules_are_public(package_name):
    package = _package(package_name)
    modules = {info.name for info in pkgutil.iter_modules(package.__path__)}
    public = {name for name in modules if not name.startswith("_")}
    assert public == PUBLIC_MODULES[package_name], (
        f"{package_name}: public modules {sorted(public)}; a module that only "
        "defines an exported name is private (its name starts with '_')"
    )
    assert not public & set(package.__all__), (
        f"{package_name}: {sorted(public & set(package.__all__))} is both a "
        "module and an exported name"
    )


@pytest.mark.parametrize("package_name", sorted(PUBLIC_MODULES))
def test_all_lists_exactly_the_public_attributes(package_name):
    _import_everything()
    package = importlib.import_module(package_name)
    attributes = {name: value for name, value in vars(package).items() if not name.startswith("_")}
    modules = {name for name, value in attributes.items() if isinstance(value, types.ModuleType)}
    assert modules <= PUBLIC_MODULES[package_name], (
        f"{package_name} has public module attributes {sorted(modules)}"
    )
    assert sorted(set(attributes) - modules) == sorted(package.__all__)
    assert len(set(package.__all__)) == len(package.__all__)
    for name in package.__all__:
        assert not isinstance(getattr(package, name), types.ModuleType), name


def test_exported_functions_are_not_shadowed_by_their_modules():
    _import_everything()
    assert isinstance(keras_agrlearn.wrap, types.FunctionType)
    assert isinstance(keras_agrlearn.members, types.FunctionType)
    assert isinstance(keras_agrlearn.tuning.leaderboard, types.FunctionType)


def test_metrics_are_exported_once_and_also_from_the_top():
    """`keras_agrlearn.metrics` groups the metrics; their pages are the top-level ones."""
    for name in keras_agrlearn.metrics.__all__:
        assert name in keras_agrlearn.__all__
        assert getattr(keras_agrlearn.metrics, name) is getattr(keras_agrlearn, name)


def test_every_exported_object_is_defined_in_a_private_module():
    _import_everything()
    for package_name in PUBLIC_MODULES:
        package = importlib.import_module(package_name)
        for name in package.__all__:
            module = getattr(package, name).__module__
            assert module.rpartition(".")[2].startswith("_"), f"{package_name}.{name}: {module}"


def test_registered_names_are_unchanged():
    _import_everything()
    registered = {
        key.partition(">")[2]
        for key in keras.saving.get_custom_objects()
        if key.startswith("keras_agrlearn>")
    }
    assert registered == set(REGISTERED) | REGISTERED_SINCE_1_0


def _instances():
    get = keras.saving.get_registered_object
    return [
        keras_agrlearn.Aggregate(2, name="aggregate"),
        keras_agrlearn.Deaggregate(2, name="deaggregate"),
        get("keras_agrlearn>TileSlots")(2, axis=1, name="tile"),
        get("keras_agrlearn>SlotsToRows")(3, name="rows"),
        get("keras_agrlearn>RowsToMembers")(3, name="members"),
        keras_agrlearn.BrierScore(),
        keras_agrlearn.ExpectedCalibrationError(num_bins=5),
        keras_agrlearn.NegativeLogLikelihood(from_logits=True),
        keras_agrlearn.TemperatureScaling(1.5, from_logits=True),
    ]


def _as_saved_before_1_0(node):
    """A serialized config as a file saved before 1.0 holds it: old module paths."""
    if isinstance(node, list):
        return [_as_saved_before_1_0(value) for value in node]
    if not isinstance(node, dict):
        return node
    node = {key: _as_saved_before_1_0(value) for key, value in node.items()}
    registered = node.get("registered_name") or ""
    if registered.startswith("keras_agrlearn>"):
        node["module"] = REGISTERED[registered.partition(">")[2]]
    return node


def _classes(node):
    """The `(module, class_name)` of every object in a serialized config."""
    if isinstance(node, list):
        return {pair for value in node for pair in _classes(value)}
    if not isinstance(node, dict):
        return set()
    found = {pair for value in node.values() for pair in _classes(value)}
    if "class_name" in node and "module" in node:
        found.add((node["module"], node["class_name"]))
    return found


@pytest.mark.parametrize("instance", _instances(), ids=lambda obj: type(obj).__name__)
def test_a_config_saved_before_1_0_deserializes(instance):
    config = _as_saved_before_1_0(keras.saving.serialize_keras_object(instance))
    name = type(instance).__name__
    assert config["module"] == REGISTERED[name]
    assert config["registered_name"] == f"keras_agrlearn>{name}"
    restored = keras.saving.deserialize_keras_object(config, safe_mode=True)
    assert type(restored) is type(instance)
    assert restored.get_config() == instance.get_config()


def test_models_saved_before_1_0_load():
    """A wrapped model and its members model, as configs of earlier files."""
    backbone = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(6, activation="relu"),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    model = keras_agrlearn.wrap(backbone, n=2, width=1.0)
    x = np.random.default_rng(0).random((5, 4)).astype("float32")
    for built in (model, keras_agrlearn.members(model)):
        config = _as_saved_before_1_0(keras.saving.serialize_keras_object(built))
        classes = _classes(config)  # before loading, which consumes the config
        restored = keras.saving.deserialize_keras_object(config, safe_mode=True)
        restored.set_weights(built.get_weights())
        np.testing.assert_allclose(
            restored.predict(x, verbose=0), built.predict(x, verbose=0), rtol=1e-6, atol=1e-6
        )
        assert type(restored) is type(built)
        if built is model:
            assert ("keras_agrlearn.model", "AgrLearnModel") in classes
            assert ("keras_agrlearn.aggregate", "Aggregate") in classes
        else:
            for name in ("TileSlots", "SlotsToRows", "RowsToMembers"):
                assert ("keras_agrlearn.members", name) in classes
