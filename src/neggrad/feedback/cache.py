"""On-disk cache of judge replies, keyed by (judge, prompt), so a resumed run does not pay twice.

One small JSON file per reply under ``<cache_dir>/<key[:2]>/<key>.json``, written to a temporary
file and renamed, so a crash never leaves a half-written entry and concurrent writers are safe. Only
replies are stored (the model's text), never a request header or an API key. Failed requests are not
cached, so they are retried on the next run.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path


def default_cache_dir() -> Path:
    """``$NEGGRAD_CACHE/judge``, else ``~/.cache/neggrad/judge``."""
    return Path(os.environ.get("NEGGRAD_CACHE") or Path.home() / ".cache" / "neggrad") / "judge"


class JudgeCache:
    """Replies of one judge identity (e.g. ``http|model|temperature|max_tokens``) by prompt."""

    def __init__(self, directory: str | Path | None, judge_id: str):
        self.directory = Path(directory) if directory else default_cache_dir()
        self.judge_id = judge_id
        self._lock = threading.Lock()
        self._tmp_counter = 0

    def key(self, prompt: str) -> str:
        return hashlib.sha256(json.dumps([self.judge_id, prompt]).encode()).hexdigest()

    def _path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.json"

    def get(self, prompt: str) -> str | None:
        """The cached reply to ``prompt``, or None (also for an unreadable entry, which is then rewritten)."""
        path = self._path(self.key(prompt))
        try:
            entry = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        reply = entry.get("reply") if isinstance(entry, dict) else None
        return reply if isinstance(reply, str) else None

    def put(self, prompt: str, reply: str) -> None:
        key = self.key(prompt)
        path = self._path(key)
        with self._lock:
            self._tmp_counter += 1
            tmp = path.with_name(f".{key}.{os.getpid()}.{threading.get_ident()}.{self._tmp_counter}.tmp")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps({"judge": self.judge_id, "reply": reply}))
        tmp.replace(path)
