"""A content-addressed cache of extracted media and model calls, safe against kill -9.

Keys are sha256 digests of canonical JSON of *exactly* what determines a result: for media, the
video's bytes and the extraction settings; for a model call, the model name, the request text, the
digests of the media bytes sent with it, and the sampling parameters (never the server
URL or API key, so replicas and key rotation do not invalidate anything). Entries are written to a
temporary file and renamed, so a killed run leaves either a whole entry or none.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Any

from media.files import atomic_write_bytes


def digest_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def digest_file(path: str | Path, chunk: int = 1 << 20) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            sha.update(block)
    return sha.hexdigest()


def cache_key(**parts: Any) -> str:
    """sha256 of the canonical JSON of ``parts`` (sorted keys, no whitespace)."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class Cache:
    """JSON entries under ``root/<namespace>/<k[:2]>/<k>.json``; counts hits and misses."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.hits: Counter[str] = Counter()
        self.misses: Counter[str] = Counter()

    def path(self, namespace: str, key: str, suffix: str = ".json") -> Path:
        return self.root / namespace / key[:2] / f"{key}{suffix}"

    def get(self, namespace: str, key: str) -> dict[str, Any] | None:
        path = self.path(namespace, key)
        try:
            value = json.loads(path.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            self.misses[namespace] += 1
            return None
        self.hits[namespace] += 1
        return value

    def put(self, namespace: str, key: str, value: dict[str, Any]) -> None:
        atomic_write_bytes(self.path(namespace, key), json.dumps(value, ensure_ascii=False).encode("utf-8"))

    def media_dir(self, key: str) -> Path:
        return self.root / "media" / key[:2] / key

    def counts(self) -> dict[str, dict[str, int]]:
        names = sorted(set(self.hits) | set(self.misses))
        return {n: {"hits": self.hits[n], "misses": self.misses[n]} for n in names}
