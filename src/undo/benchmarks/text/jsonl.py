"""Reading a JSONL corpus file: one JSON object per line, its text in one field.

A leaf of the text benchmark, so that `corpus` (user files) and `shipped` (corpora built
by scripts/corpora.sh) read JSONL the same way without importing each other.
"""

from __future__ import annotations

import json
from pathlib import Path

from ...configlib import ConfigError


def read_jsonl(path: Path, field: str, key: str) -> list[str]:
    docs = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{path}, line {lineno}: not valid JSON ({e.msg}); valid: "
                                  f"one JSON object per line") from None
            if not isinstance(record, dict) or field not in record:
                raise ConfigError(f"{path}, line {lineno}: no field '{field}' (config key "
                                  f"'{key}.field'); valid: a JSON object with a string "
                                  f"'{field}' on every line")
            if not isinstance(record[field], str):
                raise ConfigError(f"{path}, line {lineno}: field '{field}' is "
                                  f"{type(record[field]).__name__}; valid: a string")
            if record[field].strip():
                docs.append(record[field])
    return docs
