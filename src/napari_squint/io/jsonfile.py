"""Read a JSON file whose failures name the file, the line and the column."""

from __future__ import annotations

import json
from pathlib import Path


def read_json(path: str | Path, error: type[Exception] = ValueError):
    """The parsed content of ``path``.

    Raises
    ------
    error
        The file is not UTF-8 text or not valid JSON; the message names the file and where it goes wrong.
    """
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise error(f"{path}: not a text file ({err.reason} at byte {err.start})") from None
    except json.JSONDecodeError as err:
        raise error(f"{path}: not valid JSON ({err.msg} at line {err.lineno}, column {err.colno})") from None
