"""What a method reads from the data: its domains in order, their channels, which need labels.

A method returns a `DataSpec` from `data_spec(config)` (a classmethod, so the loader can be
built before the method, whose schedule needs the loader's steps per epoch). The loader
delivers a batch dict keyed by domain name, plus `<domain>_label` for every domain in
`labels`; config validation names the key of a domain or label file that is missing.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """domains: batch keys in order; channels: 1 or 3 per domain; labels: domains needing labels."""

    domains: tuple[str, ...]
    channels: Mapping[str, int]
    labels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if len(set(self.domains)) != len(self.domains) or not self.domains:
            raise ValueError(f"DataSpec.domains must be distinct and non-empty, got {self.domains}")
        if set(self.channels) != set(self.domains):
            raise ValueError(f"DataSpec.channels {dict(self.channels)} must name exactly {self.domains}")
        unknown = [d for d in self.labels if d not in self.domains]
        if unknown:
            raise ValueError(f"DataSpec.labels names unknown domains {unknown}; domains are {self.domains}")

    @staticmethod
    def label_key(domain: str) -> str:
        """The batch key of a domain's integer labels."""
        return f"{domain}_label"
