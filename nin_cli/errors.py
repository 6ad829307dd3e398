"""Errors that the CLI turns into one clear line instead of a traceback."""


class ConfigError(ValueError):
    """Bad input found before training starts (config, placement, missing data)."""
