"""The `Example:` sections of the public docstrings run as written."""

import doctest
import importlib

import pytest

MODULES = [
    "keras_agrlearn._aggregate",
    "keras_agrlearn._deaggregate",
    "keras_agrlearn._model",
    "keras_agrlearn._rebuild",
    "keras_agrlearn._wrap",
    "keras_agrlearn._members",
    "keras_agrlearn._evaluation",
    "keras_agrlearn._calibration",
    "keras_agrlearn._temperature",
    "keras_agrlearn._temperature_scaling",
    "keras_agrlearn._comparison",
    "keras_agrlearn.metrics._brier_score",
    "keras_agrlearn.metrics._expected_calibration_error",
    "keras_agrlearn.metrics._negative_log_likelihood",
]


@pytest.mark.parametrize("module_name", MODULES)
def test_docstring_examples(module_name):
    module = importlib.import_module(module_name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    tests = [t for t in finder.find(module, module_name) if t.examples]
    assert tests, f"{module_name} has no docstring examples"
    for test in tests:
        runner.run(test)
    assert runner.failures == 0, f"{runner.failures} docstring example(s) failed in {module_name}"
