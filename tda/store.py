"""Artifacts keyed by a hash of their parameters, written atomically.

Layout: ``<root>/<stage>/<key>/`` holds a complete artifact and its ``manifest.json`` (stage,
parameters, package versions, creation time, seconds taken). Work happens in
``<root>/<stage>/<key>.partial/`` and is renamed into place only when the build function returns,
so a killed run never leaves something that looks complete. A resumable stage (training, which
checkpoints every epoch atomically) continues from what its partial folder holds; any other stage
starts its partial folder afresh. A complete artifact is never overwritten.

The root is ``$TDA_STORE`` if set, else ``.store/`` at the repository root.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import platform
import shutil
import time
from dataclasses import asdict, is_dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterable

from . import __version__

MANIFEST = "manifest.json"
REPO_ROOT = Path(__file__).resolve().parent.parent


class StoreError(RuntimeError):
    """A store entry is inconsistent (a manifest that does not match its key, say)."""


def _plain(value: Any) -> Any:
    """Parameters as JSON-ready values: dataclasses become dicts, tuples lists, paths strings."""
    if is_dataclass(value) and not isinstance(value, type):
        return _plain(asdict(value))
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)  # 1.0 and 1 name the same artifact
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise TypeError(f"store parameters must be JSON-like; got {type(value).__name__}: {value!r}")


def param_key(params: dict) -> str:
    """A short stable hash of parameters (key order and int/float spelling do not matter)."""
    blob = json.dumps(_plain(params), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def text_digest(texts: Iterable[str]) -> str:
    """A short hash of a sequence of texts (each ends with NUL, so ["ab"] and ["a", "b"] differ).

    Store keys include it for the data an artifact was computed from, so other data never reuses it.
    """
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def _versions() -> dict[str, str]:
    """Versions for a manifest, read from the installed packages' metadata (no import of torch here)."""
    return {"tda": __version__, "torch": metadata.version("torch"), "transformers": metadata.version("transformers"),
            "python": platform.python_version()}


def default_root() -> Path:
    return Path(os.environ.get("TDA_STORE", REPO_ROOT / ".store"))


class Store:
    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else default_root()

    def path(self, stage: str, params: dict) -> Path:
        if not stage or "/" in stage or stage.startswith("."):
            raise ValueError(f"bad stage name {stage!r}")
        return self.root / stage / param_key(params)

    def has(self, stage: str, params: dict) -> bool:
        return (self.path(stage, params) / MANIFEST).is_file()

    def manifest(self, stage: str, params: dict) -> dict:
        path = self.path(stage, params) / MANIFEST
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"no complete artifact for stage {stage!r} at {path.parent}") from None
        except json.JSONDecodeError as err:
            raise StoreError(f"corrupt manifest {path}: {err}") from err

    def get_or_create(self, stage: str, params: dict, build: Callable[[Path], Any],
                      resumable: bool = False) -> Path:
        """The folder of a complete artifact, building it with ``build(work_dir)`` if needed.

        Builds of one key are serialised across processes by a lock file, so two notebooks that
        ask for the same base model at once build it once: the second waits, then reuses it.
        """
        final = self.path(stage, params)
        if (final / MANIFEST).is_file():  # the common case needs no lock
            return self._checked(stage, params, final)
        final.parent.mkdir(parents=True, exist_ok=True)
        with open(final.with_name(final.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                return self._build(stage, params, build, resumable, final)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _checked(self, stage: str, params: dict, final: Path) -> Path:
        stored = self.manifest(stage, params).get("params")
        if stored != _plain(params):
            raise StoreError(f"{final} holds an artifact for other parameters; not touching it")
        return final

    def _build(self, stage: str, params: dict, build: Callable[[Path], Any], resumable: bool,
               final: Path) -> Path:
        if (final / MANIFEST).is_file():  # built by another process while we waited
            return self._checked(stage, params, final)
        if final.exists():
            raise StoreError(f"{final} exists without a manifest: remove it by hand after checking it")
        work = final.with_name(final.name + ".partial")
        if work.exists() and not resumable:
            shutil.rmtree(work)
        work.mkdir(parents=True, exist_ok=True)
        start = time.time()
        build(work)
        manifest = {"stage": stage, "key": final.name, "params": _plain(params),
                    "versions": _versions(), "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                    "seconds": round(time.time() - start, 3)}
        tmp = work / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(manifest, indent=1))
        tmp.rename(work / MANIFEST)
        work.rename(final)
        return final

    def get_json(self, stage: str, params: dict, compute: Callable[[], Any], name: str = "data.json") -> Any:
        """A JSON-able value cached in the store (computed once per parameter set)."""
        def build(work: Path) -> None:
            (work / name).write_text(json.dumps(compute()))
        folder = self.get_or_create(stage, params, build)
        return json.loads((folder / name).read_text())
