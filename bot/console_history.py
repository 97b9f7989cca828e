"""The terminal's input history (`console_history`, beside the database): created readable by its
owner only, and erasable, on disk and in the running prompt's arrow-key history."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prompt_toolkit.history import FileHistory

FILE_NAME = "console_history"


def history_path(database: Path) -> Path:
    return database.parent / FILE_NAME


def create_private(path: Path) -> None:
    """Create the file 0600 unless it exists (prompt_toolkit would create it 0644)."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def count_entries(path: Path) -> int:
    """Entries in a prompt_toolkit history file: each opens with a '# <time>' line."""
    try:
        with path.open("rb") as handle:
            return sum(1 for line in handle if line.startswith(b"# "))
    except FileNotFoundError:
        return 0


def erase_file(path: Path, dry_run: bool = False) -> int:
    """Empty the history file (kept, still 0600); return how many entries it held."""
    entries = count_entries(path)
    if entries and not dry_run:
        with path.open("r+b") as handle:
            handle.truncate(0)
    return entries


def is_console(*keys: str | None) -> bool:
    """Whether a conversation or person key is the terminal's (`console:...`)."""
    return any(key is not None and key.startswith("console:") for key in keys)


class PrivateHistory:
    """The prompt's FileHistory (`file`) on a private file; `forget` empties it, also in memory
    (the prompt reloads its arrow-key history from there at every new line). prompt_toolkit is
    imported only when a terminal chat makes one."""

    def __init__(self, path: Path) -> None:
        from prompt_toolkit.history import FileHistory

        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        create_private(path)
        self.path = path
        self.file: FileHistory = FileHistory(str(path))

    def forget(self) -> int:
        entries = erase_file(self.path)
        self.file._loaded_strings = []
        return entries
