"""What a user asks a method to translate to: a direction, a target domain, or a domain code.

Two-domain methods (CycleGAN, UNIT) take a direction; N-domain methods (UFDN) take a
target domain (by name or index) or a continuous domain code. The generic translate code
only parses the flags into a :class:`TranslationRequest`; each method's
`resolve_request` says what it accepts and rejects the rest with a message naming the flag.
"""

from __future__ import annotations

import dataclasses
import math

DIRECTIONS = ("AtoB", "BtoA")


@dataclasses.dataclass(frozen=True)
class TranslationRequest:
    """direction: 'AtoB' | 'BtoA'; target: a domain name or index; code: a domain code. None: unset."""

    direction: str | None = None
    target: str | int | None = None
    code: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.direction is not None and self.direction not in DIRECTIONS:
            raise ValueError(f"--direction={self.direction!r} is not one of {', '.join(DIRECTIONS)}")

    def __str__(self) -> str:
        parts = [f"{k}={v}" for k, v in (("direction", self.direction), ("target", self.target),
                                         ("code", self.code)) if v is not None]
        return ", ".join(parts) or "default"


def parse_target(text: str | None) -> str | int | None:
    """'2' -> 2 (a domain index), 'zebra' -> 'zebra' (a domain name), '' or None -> None."""
    if text is None or text == "":
        return None
    return int(text) if text.strip().isdigit() else text.strip()


def parse_code(text: str | None) -> tuple[float, ...] | None:
    """'0.3,0.7,0' -> (0.3, 0.7, 0.0); '' or None -> None; anything else names --code."""
    if text is None or text.strip() == "":
        return None
    try:
        code = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"--code={text!r} must be comma-separated numbers, e.g. 0.3,0.7,0") from None
    if not all(math.isfinite(v) for v in code):
        raise ValueError(f"--code={text!r} must hold finite numbers")
    return code


def make_request(direction: str | None = None, target: str | None = None,
                 code: str | None = None) -> TranslationRequest:
    """A request from the translate flags' text (--direction, --target, --code)."""
    return TranslationRequest(direction or None, parse_target(target), parse_code(code))


TWO_DOMAIN_DIRECTIONS = ("AtoB", "BtoA")


def resolve_two_domains(request: TranslationRequest, method: str) -> TranslationRequest:
    """A two-domain method's request with its direction: --direction, or --target=B (AtoB) / A (BtoA).

    A target is a domain name or index (A=0, B=1) and must agree with a direction given
    too; such methods have no domain codes, so --code is refused. Default: AtoB.
    """
    if request.code is not None:
        raise ValueError(f"--code does not apply to {method} (two domains, no domain code); "
                         "use --direction=AtoB|BtoA or --target=A|B")
    direction = request.direction
    if request.target is not None:
        target = request.target
        if isinstance(target, int) and 0 <= target < 2:
            target = "AB"[target]
        if target not in ("A", "B"):
            raise ValueError(f"--target={request.target!r} is not a {method} domain; "
                             "expected A or B (or 0, 1)")
        implied = "AtoB" if target == "B" else "BtoA"
        if direction is not None and direction != implied:
            raise ValueError(f"--target={request.target} means {implied}, "
                             f"but --direction={direction} was given")
        direction = implied
    direction = direction or "AtoB"
    if direction not in TWO_DOMAIN_DIRECTIONS:
        raise ValueError(f"unknown direction {direction!r}; expected one of {TWO_DOMAIN_DIRECTIONS}")
    return TranslationRequest(direction=direction)
