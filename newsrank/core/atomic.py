"""The one way newsrank writes a file or a folder: all at once, or not at all.

Content is written to a temporary sibling and renamed into place, so a crash or an error never
leaves half a file, half a checkpoint or half a data set behind, and what was there before stays
until the new content has fully replaced it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_folder(folder: str | Path, keep_existing: bool = False) -> Iterator[Path]:
    """Fill the yielded temporary folder (beside ``folder``); on success it becomes ``folder``.

    An existing ``folder`` is replaced (renamed aside until the new one is in place, then
    removed), or, with ``keep_existing`` (content-addressed caches, where another process may have
    written the same entry first), kept and the new copy dropped. On an error the temporary
    folder is removed and ``folder`` is left as it was.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if keep_existing and folder.exists():
        shutil.rmtree(tmp, ignore_errors=True)
        return
    aside = None
    if folder.exists():  # kept aside until the new content is in place
        aside = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old-", dir=folder.parent)) / folder.name
        folder.rename(aside)
    try:
        tmp.rename(folder)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if aside is not None:
            aside.rename(folder)  # the old content back
        if keep_existing and folder.exists():  # another process finished the same entry first
            return
        raise
    finally:
        if aside is not None:
            shutil.rmtree(aside.parent, ignore_errors=True)


@contextmanager
def atomic_file(path: str | Path, binary: bool = False) -> Iterator:
    """Write ``path`` through the yielded handle (UTF-8 text, or bytes with ``binary``) of a
    temporary sibling, renamed into place on success; on an error the old file stays as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        mode = {"mode": "wb"} if binary else {"mode": "w", "encoding": "utf-8", "newline": ""}
        with os.fdopen(handle, **mode) as out:
            yield out
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through a temporary sibling and one rename."""
    with atomic_file(path) as out:
        out.write(text)
    return Path(path)
