"""Finding and reading a project's ``mailcli.toml``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ..errors import ConfigError
from .parse import parse_settings
from .settings import CONFIG_NAME, EnvVars, Settings

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

MAX_CONFIG_BYTES = 1024 * 1024  # a configuration is a few kilobytes


def find_config(*, config_file: str | os.PathLike[str] | None = None, directory: str | os.PathLike[str] | None = None) -> Path:
    """Locate ``mailcli.toml`` as git locates a repository.

    ``--config FILE`` wins, then ``MAILCLI_CONFIG``, then the first
    ``mailcli.toml`` in ``-C DIR`` (or the current folder) and its parents.
    """
    if config_file:
        path = Path(config_file).expanduser()
        if not path.is_file():
            raise ConfigError(f"Config file not found: {path}")
        return path.resolve()
    env = os.environ.get(EnvVars.CONFIG)
    if env and directory is None:
        path = Path(env).expanduser()
        if not path.is_file():
            raise ConfigError(f"Config file not found: {path} (from {EnvVars.CONFIG})")
        return path.resolve()
    start = Path(directory).expanduser() if directory else Path.cwd()
    if not start.is_dir():
        raise ConfigError(f"Not a directory: {start}")
    for folder in [start.resolve(), *start.resolve().parents]:
        candidate = folder / CONFIG_NAME
        if candidate.is_file():
            return candidate
    raise ConfigError(
        f"No {CONFIG_NAME} found in {start.resolve()} or any parent folder",
        hint="run `mailcli init` to create a project, or pass -C DIR / --config FILE",
    )




def load_settings(path: Path) -> Settings:
    """Read and validate one config file."""
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"Cannot read {path}: {exc.strerror}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path.name}: larger than {MAX_CONFIG_BYTES // 1024} KiB, which no configuration is",
                          hint=f"check that {path} is the project's mailcli.toml")
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path.name}: not UTF-8 text", hint=f"save {path} as UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path.name}: invalid TOML: {exc}", hint=f"edit {path}") from None
    except RecursionError:  # the parser recurses into nested arrays and tables
        raise ConfigError(f"{path.name}: invalid TOML: values nested too deeply", hint=f"edit {path}") from None
    return parse_settings(data, path.resolve())


def resolve(*, config_file: str | None = None, directory: str | None = None) -> Settings:
    """Find and load the project's settings (the one entry point commands use)."""
    return load_settings(find_config(config_file=config_file, directory=directory))
