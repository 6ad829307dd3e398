"""nin's version (pyproject.toml says the same), recorded in every run's env.json."""

__version__ = "0.1.0"
