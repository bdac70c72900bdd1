"""Command-line front for `--config=<file>[:<preset>]` programs: flag errors in one line.

`run(main, default_config=...)` is `absl.app.run(main)` with a flags parser that, before
absl parses anything, loads the config file and checks every `--config.<key>` override
against it, so that a missing file, a failing preset, an unknown key (with the closest
known key) or a value of the wrong type ends the program with one line on stderr,
`error: ...`, and exit status 2, instead of a traceback. Importing this module does not
import jax.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import re
import sys
from typing import Any, Callable, NoReturn, Sequence

from absl import app, flags

USAGE_ERROR = 2


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
