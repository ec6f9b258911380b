"""Loads the repository's scripts (examples/, tuning/, benchmarks/) as modules.

The scripts are not importable packages; tests load them by path.
"""

import importlib.util
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def load_script(relative_path, name=None):
    """Executes the script at `ROOT / relative_path` and returns it as a module."""
    path = ROOT / relative_path
    spec = importlib.util.spec_from_file_location(name or f"script_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
