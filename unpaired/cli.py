"""Command-line front for `--config=<file>[:<preset>]` programs: flag errors in one line.

`run(main, default_config=...)` is `absl.app.run(main)` with a flags parser that, before
absl parses anything, loads the config file and checks every `--config.<key>` override
against it, so that a missing file, a failing preset, an unknown key (with the closest
known key) or a value of the wrong type ends the program with one line on stderr,
`error: ...`, and exit status 2, instead of a traceback. `setup_logging` and
`header_lines` keep a run's first screen short: plain log lines (no absl prefixes), quiet
third-party loggers, and a few header lines instead of the whole config. Importing this
module does not import jax.
"""

from __future__ import annotations

import difflib
import importlib.util
import logging
import os
import re
import sys
from typing import Any, Callable, Mapping, NoReturn, Sequence, TextIO

from absl import app, flags
from absl import logging as absl_logging

USAGE_ERROR = 2
# Loggers of libraries that talk at INFO (orbax logs every save through absl, jax its
# backend probing): their records are shown from WARNING up unless --verbose.
THIRD_PARTY_LOGGERS = ("absl", "orbax", "jax", "jaxlib", "tensorstore", "etils", "tensorflow",
                       "tensorflow_datasets", "matplotlib", "PIL", "asyncio")


def fail(message: str) -> NoReturn:
    """Prints `error: <message>` as one line on stderr and exits with status 2."""
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)
    sys.exit(USAGE_ERROR)


def config_spec(args: Sequence[str], flag: str = "config") -> str | None:
    """The `<file>[:<preset>]` given as `--config=...` or `--config ...` (the last one wins)."""
    spec = None
    for i, arg in enumerate(args):
        if arg == "--":
            break
        if arg.startswith(f"--{flag}="):
            spec = arg.split("=", 1)[1]
        elif arg == f"--{flag}" and i + 1 < len(args):
            spec = args[i + 1]
    return spec


def load_config(spec: str) -> Any:
    """`get_config(preset)` of the file in `spec`, as config_flags loads it; errors name the path."""
    path, *preset = spec.split(":", 1)
    if not path:
        raise ValueError(f"--config={spec} names no file")
    if not os.path.isfile(path):
        raise ValueError(f"config file not found: {path}")
    if not os.access(path, os.R_OK):
        raise ValueError(f"config file is not readable: {path}")
    module_spec = importlib.util.spec_from_file_location("_unpaired_cli_config", path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as err:  # a config file that does not run
        raise ValueError(f"config file {path} failed to load: {type(err).__name__}: {err}") from err
    if not hasattr(module, "get_config"):
        raise ValueError(f"config file {path} has no get_config()")
    try:
        return module.get_config(*preset)
    except Exception as err:  # e.g. an unknown preset
        raise ValueError(f"{err} (--config={spec})") from err


def config_keys(config: Any, prefix: str = "") -> list[str]:
    """Every dotted key of a ConfigDict, nested ConfigDicts included (`data`, `data.crop_size`)."""
    keys = []
    for key in config.keys():
        dotted = f"{prefix}{key}"
        keys.append(dotted)
        value = config[key]
        if hasattr(value, "keys") and callable(value.keys):
            keys.extend(config_keys(value, dotted + "."))
    return keys


def override_keys(args: Sequence[str], flag: str = "config") -> list[str]:
    """The dotted keys of `--config.<key>[=v]` and `--noconfig.<key>` arguments, in order."""
    keys = []
    for arg in args:
        if arg == "--":
            break
        name = arg[2:].split("=", 1)[0] if arg.startswith("--") else ""
        for lead in (f"{flag}.", f"no{flag}."):
            if name.startswith(lead):
                keys.append(name[len(lead):])
                break
    return keys


def unknown_key_message(key: str, known: Sequence[str], flag: str = "config") -> str:
    """`unknown config key config.<key>`, with the closest known key if one is close."""
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    hint = f" (did you mean {flag}.{close[0]}?)" if close else ""
    return f"unknown config key {flag}.{key}{hint}"


def check_config_args(
    args: Sequence[str], flag: str = "config", default_config: str | None = None
) -> str | None:
    """The one-line error for the config file, preset or override keys in `args`, or None."""
    spec = config_spec(args, flag) or default_config
    if spec is None:
        return None
    try:
        config = load_config(spec)
    except ValueError as err:
        return str(err)
    known = config_keys(config)
    for key in override_keys(args, flag):
        if key not in known:
            return unknown_key_message(key, known, flag)
    return None


def exit_on_config_errors(
    args: Sequence[str], flag: str = "config", default_config: str | None = None
) -> None:
    """`fail`s with `check_config_args`'s message, if any.

    A program whose `DEFINE_config_file` has a default must call this before defining
    it: config_flags applies the `--config.<key>` overrides in `sys.argv` to a default
    config as soon as the flag is defined, and raises a traceback for an unknown key.
    """
    message = check_config_args(list(args), flag, default_config)
    if message:
        fail(message)


def parse_flags(
    argv: Sequence[str], *, flag: str = "config", default_config: str | None = None
) -> list[str]:
    """absl's flag parsing, with every config or flag error as one `error:` line (exit 2)."""
    exit_on_config_errors(argv[1:], flag, default_config)
    try:
        return flags.FLAGS(list(argv))
    except flags.Error as err:
        text = " ".join(str(err).split())
        named = re.match(r"flag --(no)?([\w.]+)=?", text)
        if named and named.group(2).startswith(f"{flag}."):
            fail(f"bad value for {named.group(2)}: {text}")
        fail(text)
    except Exception as err:  # config_flags raises plain exceptions for some overrides
        fail(f"{type(err).__name__}: {err}")


def run(main: Callable[[list[str]], Any], *, flag: str = "config",
        default_config: str | None = None) -> None:
    """`absl.app.run(main)` with `parse_flags` as its flags parser."""
    app.run(main, flags_parser=lambda argv: parse_flags(
        argv, flag=flag, default_config=default_config))


def define_verbose() -> flags.FlagHolder:
    """The `--verbose` flag of every launch command (one help text for all of them)."""
    return flags.DEFINE_bool("verbose", False, "Print the resolved config and the libraries' "
                             "INFO logs (orbax, absl, jax).")


class PlainFormatter(logging.Formatter):
    """The message alone for INFO and below, `warning: ...` and `error: ...` above: lines a
    user reads, without absl's `I1207 07:31:59.643997 1400 train.py:156]` prefix."""

    def format(self, record: logging.LogRecord) -> str:
        message = super().format(record)
        if record.levelno >= logging.ERROR:
            return f"error: {message}"
        if record.levelno >= logging.WARNING:
            return f"warning: {message}"
        return message


class QuietThirdParty(logging.Filter):
    """Drops `THIRD_PARTY_LOGGERS`' records below WARNING. A filter on our handler rather than
    their levels: JAX reads its logger's level at import as `jax_logging_level` and would then
    add a second, prefixed handler of its own."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or record.name.split(".")[0] not in THIRD_PARTY_LOGGERS


def setup_logging(verbose: bool = False, stream: TextIO | None = None) -> logging.Handler:
    """Root logging as plain lines on `stream` (stderr) from INFO up, in place of absl's
    prefixed handler; `THIRD_PARTY_LOGGERS` from WARNING up unless `verbose`. Returns the handler."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, absl_logging.ABSLHandler) or getattr(handler, "unpaired_plain", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(PlainFormatter())
    handler.unpaired_plain = True  # so that a second call replaces it
    if not verbose:
        handler.addFilter(QuietThirdParty())
    else:
        # Parsed absl flags leave absl's own logger (orbax logs through it) at WARNING, which
        # drops its INFO records before any handler sees them.
        logging.getLogger("absl").setLevel(logging.INFO)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    return handler


def describe_devices(devices: Sequence[Any], process_count: int = 1) -> str:
    """`1 cpu` or `8 NVIDIA H100 80GB HBM3 (2 processes)`: the devices by kind (jax.devices())."""
    kinds: dict[str, int] = {}
    for device in devices:
        kind = str(getattr(device, "device_kind", "") or getattr(device, "platform", "device"))
        kinds[kind] = kinds.get(kind, 0) + 1
    text = ", ".join(f"{n} {kind}" for kind, n in kinds.items()) or "none"
    return text + (f" ({process_count} processes)" if process_count > 1 else "")


def _short_path(path: str) -> str:
    """`path` relative to the working directory when it lies inside it."""
    if not os.path.isabs(path):
        return path
    rel = os.path.relpath(path, os.getcwd())
    return path if rel.startswith("..") else rel


def describe_config(spec: str) -> str:
    """`configs/cyclegan.py, preset digits` for the spec `<file>[:<preset>]`."""
    path, _, preset = spec.partition(":")
    return f"{_short_path(path)}, preset {preset}" if preset else _short_path(path)


def header_lines(command: str, method: str, config: str, workdir: str, devices: str,
                 overrides: Mapping[str, Any]) -> list[str]:
    """A run's first lines: what trains, from which config, where, on what, and the
    `--config.x=y` overrides given; the full config stays in `<workdir>/config.json`."""
    lines = [f"{command} {method} ({describe_config(config)}) on {devices}",
             f"workdir: {workdir}  (full config in config.json there; --verbose prints it)"]
    if overrides:
        lines.append("overrides: " + " ".join(f"{k}={v}" for k, v in overrides.items()))
    return lines
