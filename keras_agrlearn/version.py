"""The version of keras_agrlearn, its one source.

Plain Python without imports: the build reads it statically
(`[tool.setuptools.dynamic]` in pyproject.toml) without importing Keras.
"""

__version__ = "1.0.0"
