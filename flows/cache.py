"""A content-addressed cache of extracted media and model calls, safe against kill -9.

Keys are sha256 digests of canonical JSON of *exactly* what determines a result: for media, the
video's bytes and the extraction settings; for a model call, the model name, the request messages
(with media replaced by digests of their bytes), and the sampling parameters (never the server
URL or API key, so replicas and key rotation do not invalidate anything). Entries are written to a
temporary file and renamed, so a killed run leaves either a whole entry or none.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections import Counter
from pathlib import Path
from typing import Any


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


def request_fingerprint(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages with every base64 media payload replaced by the sha256 of its text."""

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items()}
        if isinstance(value, list):
            return [strip(v) for v in value]
        if isinstance(value, str) and len(value) > 512 and (value.startswith("data:") or value.isascii()):
            return "sha256:" + digest_bytes(value.encode())
        return value

    return strip(messages)


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
        write_atomic(self.path(namespace, key), json.dumps(value, ensure_ascii=False).encode("utf-8"))

    def media_dir(self, key: str) -> Path:
        return self.root / "media" / key[:2] / key

    def counts(self) -> dict[str, dict[str, int]]:
        names = sorted(set(self.hits) | set(self.misses))
        return {n: {"hits": self.hits[n], "misses": self.misses[n]} for n in names}


def write_atomic(path: Path, data: bytes) -> None:
    """Write via a temporary file and ``os.replace``: a killed process leaves the whole file or none.

    No fsync: it protects against power loss, not process kills, and cost ~20% of the pipeline's
    time; an entry torn by a machine crash reads as a cache miss (see ``Cache.get``).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
