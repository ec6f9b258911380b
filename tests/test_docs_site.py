"""The documentation site covers the public API, and the version has one source.

Every name exported by `keras_agrlearn`, `keras_agrlearn.metrics` and
`keras_agrlearn.tuning` has its page under docs/api/, listed in the nav of
mkdocs.yml, whose `:::` directive names the object that the package exports.
The metrics are exported from `keras_agrlearn` too and share its pages. The site itself is built by
`scripts/check_docs.sh` (`mkdocs build --strict`), which CI runs.
"""

import ast
import importlib
import pathlib
import re

import pytest

import keras_agrlearn

ROOT = pathlib.Path(__file__).resolve().parents[1]
API = ROOT / "docs" / "api"
PACKAGES = {"keras_agrlearn": "", "keras_agrlearn.metrics": "", "keras_agrlearn.tuning": "tuning."}


def exported(package):
    """`__all__` of a package, read without importing it."""
    init = ROOT / package.replace(".", "/") / "__init__.py"
    for node in ast.parse(init.read_text()).body:
        if isinstance(node, ast.Assign) and any(
            getattr(target, "id", None) == "__all__" for target in node.targets
        ):
            return ast.literal_eval(node.value)
    raise AssertionError(f"{init} has no __all__")


PUBLIC = [
    (package, name, f"{prefix}{name}.md")
    for package, prefix in PACKAGES.items()
    for name in exported(package)
]


@pytest.mark.parametrize(
    "package, name, page", PUBLIC, ids=[f"{package}.{name}" for package, name, _ in PUBLIC]
)
def test_every_public_name_has_an_api_page(package, name, page):
    path = API / page
    assert path.is_file(), f"{package}.{name} has no API page: add docs/api/{page}"
    assert f"api/{page}" in (ROOT / "mkdocs.yml").read_text(), (
        f"docs/api/{page} is not in the nav of mkdocs.yml"
    )
    directives = re.findall(r"^::: *(\S+)", path.read_text(), flags=re.MULTILINE)
    assert len(directives) == 1, f"docs/api/{page} needs one ::: directive, has {directives}"
    if package == "keras_agrlearn.tuning":
        pytest.importorskip("keras_tuner")
    # The defining (private) module's path, which mkdocstrings reads without
    # importing the package.
    module_path, _, attribute = directives[0].rpartition(".")
    documented = getattr(importlib.import_module(module_path), attribute)
    assert documented is getattr(importlib.import_module(package), name)
    assert documented.__module__ == module_path, (
        f"docs/api/{page}: use the defining path {documented.__module__}.{attribute}"
    )


def test_api_pages_document_public_names_only():
    pages = {page for _, _, page in PUBLIC} | {"index.md"}
    stray = sorted(path.name for path in API.glob("*.md") if path.name not in pages)
    assert not stray, f"API pages without a public name: {stray}"


def test_version_has_one_source():
    version_file = ROOT / "keras_agrlearn" / "version.py"
    (assignment,) = [
        node for node in ast.parse(version_file.read_text()).body if isinstance(node, ast.Assign)
    ]
    version = ast.literal_eval(assignment.value)
    assert re.fullmatch(r"\d+\.\d+\.\d+([.-]?\w+)?", version), version
    assert keras_agrlearn.__version__ == version
    tomllib = pytest.importorskip("tomllib")
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in pyproject["project"]
    assert "version" in pyproject["project"]["dynamic"]
    attr = pyproject["tool"]["setuptools"]["dynamic"]["version"]["attr"]
    assert attr == "keras_agrlearn.version.__version__"
    assert f"## [{version}]" in (ROOT / "CHANGELOG.md").read_text()
