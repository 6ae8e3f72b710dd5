"""The generation cache: an answer is reused across the runs of one results folder when everything that decides it
is the same: the model's weights (a content hash of their folder; a hub model's revision; else its name, said so),
the adapter's content hash, the backend settings that change answers (its `answer_settings`, the dtype it computes in
on this machine, the versions of its libraries), the rendered prompt, the generation parameters and the suite's seed,
and for sampled answers (temperature > 0) the sample's index.

One SQLite file in the results folder (`ResultsDir.generations_db`), WAL mode: every answer is committed as it
arrives, so a crash loses nothing already stored, and concurrent runs write side by side. What is stored is the
answer and its token counts, never its timing: latency belongs to the run that measured it. Failed requests are
never stored.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any

from harness import models
from harness.backends import Deployment
from harness.records import Completion, Request
from harness.store import now_iso

SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    key TEXT PRIMARY KEY, run_id TEXT NOT NULL, candidate TEXT NOT NULL, task TEXT NOT NULL, model TEXT NOT NULL,
    text TEXT NOT NULL, prompt_tokens INTEGER, completion_tokens INTEGER, created_at TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS answers_run ON answers (run_id);
CREATE TABLE IF NOT EXISTS weights (folder TEXT PRIMARY KEY, stamp TEXT NOT NULL, sha256 TEXT NOT NULL);
"""
# Files of an adapter folder that decide its answers (its lineage also holds wall times, which do not).
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def _sha256_files(paths: list[Path], root: Path) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(str(path.relative_to(root)).encode())
        with path.open("rb") as handle:
            for block in iter(partial(handle.read, 1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()


def adapter_digest(adapter: Path) -> str:
    """The content hash of an adapter's configuration and weights (a few MB: hashed every time)."""
    return _sha256_files([adapter / name for name in ADAPTER_FILES if (adapter / name).is_file()], adapter)


def _versions(packages: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


@dataclass(frozen=True)
class AnswerSource:
    """What decides a candidate's answers besides the request, as one digest; `weights` says how its weights were
    identified (for run.json)."""

    candidate: str
    model: str
    digest: str
    weights: str
    seed: int

    def key(self, request: Request, sample: int = 0) -> str:
        """The cache key of one request's answer, the suite's seed in it: greedy decoding should not read the seed,
        but a backend's sampler or a batch-dependent kernel may, and a team that changes the seed expects new answers;
        each sample of a sampled request (temperature > 0) has its own."""
        parts: dict[str, Any] = {"source": self.digest, "messages": request.messages, "prompt": request.prompt,
                                 "max_new_tokens": request.max_new_tokens, "temperature": request.temperature,
                                 "stop": list(request.stop), "seed": self.seed}
        if request.temperature > 0:
            parts["sample"] = sample
        return hashlib.sha256(json.dumps(parts, sort_keys=True, ensure_ascii=False).encode()).hexdigest()

    def keys(self, requests: list[Request]) -> dict[str, str]:
        """The keys of a task's requests, all of them in order, by example id: a sampled request whose prompt came
        before is that prompt's next sample, so that examples asking the same thing keep their own answers."""
        seen: Counter[str] = Counter()
        out = {}
        for request in requests:
            first = self.key(request)
            out[request.example_id] = self.key(request, seen[first]) if request.temperature > 0 else first
            seen[first] += 1
        return out


@dataclass(frozen=True)
class CacheInfo:
    path: Path
    size_bytes: int
    answers: int
    by_model: dict[str, int]
    by_run: dict[str, int]
    oldest: str | None
    newest: str | None


@dataclass(frozen=True)
class Pruned:
    answers: int
    by_run: dict[str, int]
    by_model: dict[str, int]


class GenerationCache:
    """The cache of one results folder; opened on first use, so a run that reuses nothing pays nothing."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(SCHEMA)
        return self._db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def source(self, target: Deployment, seed: int, say: Any = print) -> AnswerSource:
        """The answer source of a candidate's deployment (its adapter: the one given or trained for it)."""
        options = target.options
        weights_key, weights = self._weights(target, say)
        parts = {"weights": weights_key, "adapter": adapter_digest(Path(target.adapter)) if target.adapter else None,
                 "settings": options.answer_settings(), "dtype": options.resolved_dtype(),
                 "versions": _versions(options.packages)}
        digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
        return AnswerSource(target.name, target.model, digest, weights, seed)

    def _weights(self, target: Deployment, say: Any) -> tuple[str, str]:
        """What stands for the weights in the key, and how run.json describes it."""
        model = target.model
        if target.options.local_weights:
            folder = models.local_dir(model) or (Path(models.resolve(model, say)) if model in models.EMBEDDED
                                                 else None)
            if folder is not None:
                sha = self.folder_digest(folder)
                return f"sha256:{sha}", f"content sha256 {sha[:16]} of {folder}"
            snapshot = models.hf_cached(model, "config.json")
            if snapshot is not None:
                return f"hub:{model}@{snapshot.parent.name}", f"hub revision {snapshot.parent.name} of {model}"
        return (f"name:{model}", f"the name {model!r} only: its weights are not on this machine, so new weights "
                "served under that name are not noticed (`harness run --no-cache` regenerates)")

    def folder_digest(self, folder: Path) -> str:
        """The content hash of a model folder (weights, config, tokenizer, chat template), remembered against the
        files' sizes and modification times so that a 500 MB model is read once, not at every run."""
        files = sorted(p for p in folder.resolve().rglob("*") if p.is_file() and not p.name.startswith("."))
        stamp = json.dumps([[str(p.relative_to(folder.resolve())), p.stat().st_size, p.stat().st_mtime_ns]
                            for p in files])
        row = self.db.execute("SELECT stamp, sha256 FROM weights WHERE folder = ?", (str(folder.resolve()),)).fetchone()
        if row is not None and row[0] == stamp:
            return str(row[1])
        sha = _sha256_files(files, folder.resolve())
        self.db.execute("INSERT OR REPLACE INTO weights VALUES (?, ?, ?)", (str(folder.resolve()), stamp, sha))
        return sha

    def find(self, keys: dict[str, str], candidate: str, task: str) -> dict[str, Completion]:
        """The cached answers of the requests whose keys are given (example id -> key), by example id; each
        carries the run that generated it and no timing."""
        out = {}
        for example_id, key in keys.items():
            row = self.db.execute("SELECT text, prompt_tokens, completion_tokens, run_id FROM answers WHERE key = ?",
                                  (key,)).fetchone()
            if row is not None:
                out[example_id] = Completion(example_id, candidate, task, row[0], prompt_tokens=row[1],
                                             completion_tokens=row[2], cached_from=row[3])
        return out

    def put(self, key: str, completion: Completion, source: AnswerSource, run_id: str) -> None:
        """Store a successful answer, committed at once; a failed one is never stored, and the first answer
        stored under a key stays (with the run that generated it)."""
        if not completion.ok or completion.cached_from is not None:
            return
        self.db.execute("INSERT OR IGNORE INTO answers VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (key, run_id, completion.candidate, completion.task, source.model, completion.text,
                         completion.prompt_tokens, completion.completion_tokens, now_iso()))

    def info(self) -> CacheInfo:
        size = sum(p.stat().st_size for p in self.path.parent.glob(self.path.name + "*") if p.is_file())
        rows = self.db.execute("SELECT model, run_id, created_at FROM answers").fetchall()
        times = sorted(r[2] for r in rows)
        return CacheInfo(self.path, size, len(rows), dict(Counter(r[0] for r in rows)),
                         dict(Counter(r[1] for r in rows)), times[0] if times else None, times[-1] if times else None)

    def prune(self, older_than_days: float | None = None, run: str | None = None,
              model: str | None = None) -> Pruned:
        """Remove the answers matching every condition given (at least one is), in one transaction."""
        where, args = [], []
        if older_than_days is not None:
            cutoff = datetime.now(timezone.utc) - timedelta(days=older_than_days)
            where.append("created_at < ?")
            args.append(cutoff.isoformat(timespec="seconds"))
        if run is not None:
            where.append("run_id = ?")
            args.append(run)
        if model is not None:
            where.append("model = ?")
            args.append(model)
        assert where, "prune needs a condition"
        condition = " AND ".join(where)
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            rows = self.db.execute(f"SELECT run_id, model FROM answers WHERE {condition}", args).fetchall()
            self.db.execute(f"DELETE FROM answers WHERE {condition}", args)
        return Pruned(len(rows), dict(Counter(r[0] for r in rows)), dict(Counter(r[1] for r in rows)))
