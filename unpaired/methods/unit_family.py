"""`config.method='unit'`: the class is picked by `config.arch`, master (`unit.UNIT`) or
the NIPS-2017 networks (`unit_v02.UNITv02`).

The pick lives here, above both, so `unit_v02` may build on `unit` without `unit` naming
it back (no import circle). The registry serves this class under 'unit'; building it
returns the picked class's instance.
"""

from __future__ import annotations

from typing import Any

import ml_collections

from unpaired.config_checks import check_choice
from unpaired.data.spec import DataSpec
from unpaired.methods.unit import ARCHS, UNIT
from unpaired.methods.unit_v02 import UNITv02


def arch_class(config: ml_collections.ConfigDict) -> type:
    """UNITv02 when config.arch is 'version_02', else UNIT (master, the default)."""
    return UNITv02 if config.get("arch", "master") == "version_02" else UNIT


class UNITFamily:
    """UNIT by config.arch: every classmethod and the constructor defer to `arch_class(config)`."""

    name = "unit"

    @classmethod
    def validate_config(cls, config: ml_collections.ConfigDict) -> None:
        """ConfigError naming config.arch if it is unknown, then the picked class's own checks."""
        if "arch" in config:
            check_choice(config, "arch", ARCHS)
        arch_class(config).validate_config(config)

    @classmethod
    def data_spec(cls, config: ml_collections.ConfigDict) -> DataSpec:
        return arch_class(config).data_spec(config)

    @classmethod
    def required_init(cls, config: ml_collections.ConfigDict) -> tuple[str, ...]:
        return arch_class(config).required_init(config)

    def __new__(cls, config: ml_collections.ConfigDict, steps_per_epoch: int = 1) -> Any:
        return arch_class(config)(config, steps_per_epoch)
