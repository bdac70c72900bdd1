"""ConfigError and the small checks every config validator shares (the run's and each method's).

The bottom floor of config checking: methods and eval import these without importing the
run-level `config_validation.validate`, which itself asks the methods to check their keys.
"""

from __future__ import annotations

from typing import Any, Iterable


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key (config.x.y)."""


def check_present(config: Any, keys: Iterable[str], prefix: str = "config") -> None:
    """Raises ConfigError naming the first of `keys` that the config lacks."""
    for key in keys:
        if key not in config:
            raise ConfigError(f"{prefix}.{key} is missing; start from a file in configs/")


def check_choice(config: Any, key: str, choices: Iterable[str], prefix: str = "config") -> None:
    """Raises ConfigError unless `config[key]` is one of `choices`."""
    value = config[key]
    if value not in choices:
        raise ConfigError(f"{prefix}.{key}={value!r} is not one of {', '.join(choices)}")


def check_at_least(config: Any, key: str, minimum: float, prefix: str = "config") -> None:
    """Raises ConfigError if `config[key]` is below `minimum`."""
    value = config[key]
    if value < minimum:
        raise ConfigError(f"{prefix}.{key}={value!r} must be >= {minimum}")
