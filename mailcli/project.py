"""Creating a new project folder (``mailcli init``).

A project is a folder (0700) with ``mailcli.toml`` (0644: only its owner
changes it), ``templates/`` with a working newsletter, a ``.gitignore`` that
keeps personal data and secrets out of git, ``.mailcli/secret`` (a random
HMAC key, mode 0600, folder 0700) and the database (mode 0600) — those modes
whatever the umask.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

from .binding import bind_store
from .config import CONFIG_NAME, SECRET_FILE, load_settings
from .errors import MailcliError, UsageError
from .filemodes import make_private
from .store import open_store

SCAFFOLD = Path(__file__).parent / "scaffold"


@dataclass(frozen=True, slots=True)
class InitResult:
    root: Path
    config: Path
    database: Path
    templates: list[str]


def _toml_string(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _write_new(path: Path, text: str, mode: int) -> None:
    """Write a new file with exactly ``mode``, whatever the umask."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        os.fchmod(handle.fileno(), mode)
        handle.write(text)


def _owner_writes_only(folder: Path) -> None:
    """Templates copied under any umask: folders 0755, files 0644 (only the owner changes what is sent)."""
    for path in [folder, *folder.rglob("*")]:
        make_private(path, 0o755 if path.is_dir() else 0o644)


def write_secret(root: Path) -> Path:
    """Create ``.mailcli/secret`` (0600 in a 0700 folder) unless it exists."""
    folder = root / SECRET_FILE.parent
    folder.mkdir(mode=0o700, exist_ok=True)
    os.chmod(folder, 0o700)
    path = root / SECRET_FILE
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return path
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_hex(32) + "\n")
    return path


# Complexity: one step per file of a new project, each refusing to overwrite what is there.
def init_project(directory: Path, *, name: str | None = None, language: str = "en") -> InitResult:
    """Scaffold a project in ``directory`` (created if missing); ``language``
    ("en" or "nl") is that of the newsletter, the confirmation mail, the
    pages recipients see and the comments of mailcli.toml."""
    from .config.settings import LANGUAGES

    if language not in LANGUAGES:
        raise UsageError(f"--language: expected {' or '.join(LANGUAGES)}, not {language!r}")
    scaffold = SCAFFOLD / language if language != "en" else SCAFFOLD
    root = directory.resolve()
    if root.exists() and not root.is_dir():
        raise UsageError(f"Not a directory: {root}")
    config_path = root / CONFIG_NAME
    if config_path.exists():
        raise MailcliError(f"{config_path} already exists; this folder is a mailcli project", hint="use `mailcli -C DIR ...` to work in it")
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    # Whatever the umask: the folder holds the database, the secret and the
    # configuration, so only its owner may enter it (docs/guarantees.md#file-modes).
    make_private(root, 0o700)
    title = name or re.sub(r"[-_]+", " ", root.name).strip().title() or "Newsletter"
    text = (scaffold / "mailcli.toml").read_text(encoding="utf-8").replace("{name}", _toml_string(title))
    _write_new(config_path, text, 0o644)

    templates: list[str] = []
    source = SCAFFOLD / "templates"
    target = root / "templates"
    if source.is_dir() and not target.exists():
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        if scaffold != SCAFFOLD:  # the language's own files over the English ones
            shutil.copytree(scaffold / "templates", target, ignore=shutil.ignore_patterns("__pycache__"),
                            dirs_exist_ok=True)
        _owner_writes_only(target)
    if target.is_dir():
        templates = sorted(p.name for p in target.iterdir() if p.is_dir() and not p.name.startswith("_"))

    gitignore = root / ".gitignore"
    if not gitignore.exists():
        _write_new(gitignore, (SCAFFOLD / "gitignore").read_text(encoding="utf-8"), 0o644)
    write_secret(root)
    settings = load_settings(config_path)
    store = open_store(settings.project.database)
    try:
        bind_store(store, settings)
    finally:
        store.close()
    return InitResult(root=root, config=config_path, database=settings.project.database, templates=templates)
