"""Artifacts keyed by a hash of their parameters, written atomically.

Layout: ``<root>/<stage>/<key>/`` holds a complete artifact and its ``manifest.json`` (stage,
parameters, package versions, creation time, seconds taken). Work happens in
``<root>/<stage>/<key>.partial/`` and is renamed into place only when the build function returns,
so a killed run never leaves something that looks complete. A resumable stage (training, which
checkpoints every epoch atomically) continues from what its partial folder holds; any other stage
starts its partial folder afresh. A complete artifact is never overwritten.

The root is ``$TDA_STORE`` if set, else ``.store/`` at the repository root.

Integrity. When an entry is completed, its manifest lists every file it holds with its size and
SHA-256 (``files``). ``get_or_create`` checks that each listed file is there with its size (stat
calls only: about 0.3 ms for a base model's 147 files) and treats an entry that fails — a file or
checkpoint folder deleted by hand, a truncated file, a missing or unreadable manifest — as damaged:
it warns, naming the folder and the fault, removes the entry and builds it again, so a run never
silently uses half an artifact (say the previous epoch as the base model). ``python -m tda.store
verify`` checks every entry fully (sizes, hashes, and that JSON, safetensors, torch and NumPy files
are well-formed), reports damaged ones, and removes them with ``--fix``.

Entries written before manifests listed their files still load and are not migrated: nothing
records what they held, so a deleted file cannot be told from one never written, and recording
their files now would bless whatever damage they carry. ``verify`` calls them "unverifiable",
checks that the files they hold are well-formed, and with ``--fix --strict`` removes them too (the
next run rebuilds them with a file list). Callers that know what an entry must hold say so with
``get_or_create(check=...)``: the training runs check that every epoch's checkpoint is there
(``tda.checkpoints.run_problems``), so a checkpoint folder deleted by hand is rebuilt even there.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import platform
import re
import shutil
import struct
import sys
import time
import warnings
import zipfile
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, is_dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from . import __version__
from .threads import DEFAULT_THREADS, training_threads

MANIFEST = "manifest.json"
REPO_ROOT = Path(__file__).resolve().parent.parent
KEY_RE = re.compile(r"[0-9a-f]{16}")  # an entry's folder name (param_key)
REMOVING = ".removing"  # suffix of an entry being removed (renamed first, so removal is atomic)


class StoreError(RuntimeError):
    """A store entry is inconsistent (a manifest that does not match its key, say)."""


class DamagedEntryError(StoreError):
    """A file of a store entry is missing, truncated or corrupt; the message says how to rebuild it.
    ``problem``: the file and its fault alone (for a caller that removes the entry itself)."""

    def __init__(self, message: str, problem: str | None = None):
        super().__init__(message)
        self.problem = problem or message


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


# ---- files of an entry ---------------------------------------------------------------------------------
def file_digest(path: Path) -> str:
    """SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def list_files(folder: Path) -> dict[str, dict]:
    """Every file under ``folder`` but its manifest: relative path -> ``{"size", "sha256"}``, sorted."""
    folder = Path(folder)
    out = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_file() and rel not in (MANIFEST, MANIFEST + ".tmp"):
            out[rel] = {"size": path.stat().st_size, "sha256": file_digest(path)}
    return out


def _safetensors_problem(path: Path) -> str | None:
    """A safetensors file is an 8-byte header length, a JSON header, then the tensors' bytes; the
    header's largest data offset must reach exactly the end of the file."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            return f"truncated safetensors file ({size} bytes, no header)"
        (n,) = struct.unpack("<Q", head)
        if 8 + n > size:
            return f"truncated safetensors file (its header needs {8 + n} bytes, the file has {size})"
        header = json.loads(fh.read(n))
    end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end != size:
        return f"truncated or padded safetensors file ({size} bytes; its header describes {8 + n + end})"
    return None


def _npy_problem(path: Path) -> str | None:
    with open(path, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(fh)
        start = fh.tell()
    need = start + int(np.prod(shape)) * dtype.itemsize
    size = path.stat().st_size
    return None if dtype.hasobject or size == need else f"truncated .npy file ({size} bytes, needs {need})"


def file_problem(path: str | Path, deep: bool = False) -> str | None:
    """What is wrong with a stored file's format, or None when nothing is found.

    JSON must parse; a safetensors header must describe exactly the file's bytes; a ``.npy`` header
    its size; a zip archive (``.pt`` written by ``torch.save``, ``.npz``) must have its central
    directory, and with ``deep`` every member must pass its CRC. Other files are not inspected.
    For the callers that read a stored file (say, to skip a truncated last checkpoint and resume
    from the one before).
    """
    path = Path(path)
    try:
        if path.suffix == ".json":
            json.loads(path.read_text(encoding="utf-8"))
        elif path.suffix == ".safetensors":
            return _safetensors_problem(path)
        elif path.suffix == ".npy":
            return _npy_problem(path)
        elif path.suffix in (".pt", ".npz"):
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip() if deep else None
            if bad is not None:
                return f"member {bad} of the archive fails its CRC check"
    except FileNotFoundError:
        return "missing"
    except (OSError, ValueError, KeyError, TypeError, struct.error, zipfile.BadZipFile) as err:
        # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return f"corrupt or truncated ({type(err).__name__}: {str(err)[:120]})"
    return None


def entry_of(path: str | Path) -> Path | None:
    """The store entry (a folder holding a manifest) that ``path`` lies in, or None."""
    path = Path(path).absolute()
    for folder in (path, *path.parents):
        if (folder / MANIFEST).is_file():
            return folder
    return None


def remove_advice(folder: Path) -> str:
    """What to do about a damaged entry: the command that removes it; the next run rebuilds it."""
    return (f"remove it (rm -rf '{folder}', or `python -m tda.store verify --fix` for every damaged "
            "entry) and run again to rebuild it")


def damaged(path: str | Path, problem: str) -> DamagedEntryError:
    """The error for a damaged stored file: names the file, the fault, the entry and the command."""
    path = Path(path)
    entry = entry_of(path)
    where = f"; it belongs to the store entry {entry}: {remove_advice(entry)}" if entry else ""
    return DamagedEntryError(f"{path}: {problem}{where}", problem=f"{path}: {problem}")


def read_json(path: str | Path) -> Any:
    """A JSON file's value; a missing or corrupt stored file raises :class:`DamagedEntryError`
    naming the file, its store entry and the command that removes the entry."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise damaged(path, "missing") from None
    except (ValueError, OSError) as err:
        raise damaged(path, f"corrupt or truncated JSON ({err})") from None


@dataclass
class EntryReport:
    """What ``verify_entry`` found. ``status``: "ok", "damaged" or "unverifiable" (no file list)."""

    folder: Path
    status: str
    problems: list[str] = field(default_factory=list)
    n_files: int = 0
    n_bytes: int = 0


def _manifest_problems(folder: Path) -> tuple[dict | None, list[str]]:
    """(manifest, problems): a missing or unreadable manifest, or one that names another entry."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, [f"{MANIFEST} is missing"]
    except (ValueError, OSError) as err:
        return None, [f"{MANIFEST} is unreadable ({err})"]
    if not isinstance(manifest, dict) or "params" not in manifest:
        return None, [f"{MANIFEST} has no parameters"]
    problems = []
    try:
        key = param_key(manifest["params"])
    except TypeError as err:
        return manifest, [f"{MANIFEST}: parameters unreadable ({err})"]
    if key != folder.name or manifest.get("key", key) != folder.name:
        problems.append(f"{MANIFEST} describes entry {key}, not {folder.name}")
    if manifest.get("stage", folder.parent.name) != folder.parent.name:
        problems.append(f"{MANIFEST} names stage {manifest.get('stage')!r}, not {folder.parent.name!r}")
    files = manifest.get("files")
    if files is not None and not (isinstance(files, dict) and all(
            isinstance(v, dict) and isinstance(v.get("size"), int) for v in files.values())):
        problems.append(f"{MANIFEST}: its file list is malformed")
    return manifest, problems


def _listed_problems(folder: Path, files: dict[str, dict], deep: bool) -> list[str]:
    """Listed files that are missing or of another size (and with ``deep``, another hash)."""
    problems = []
    for rel, info in files.items():
        path = folder / rel
        try:
            size = path.stat().st_size
        except OSError:
            problems.append(f"{rel} is missing")
            continue
        if size != info["size"]:
            problems.append(f"{rel} has {size} bytes, {info['size']} when stored (truncated or rewritten)")
        elif deep and info.get("sha256") and file_digest(path) != info["sha256"]:
            problems.append(f"{rel} differs from what was stored (SHA-256 mismatch: corrupt)")
    return problems


def verify_entry(folder: str | Path, deep: bool = True) -> EntryReport:
    """Check one entry: its manifest; each listed file present with its size (and, with ``deep``,
    its SHA-256); and every file well-formed (:func:`file_problem`). Without a file list (an entry
    written before they existed) the status is "unverifiable" unless a check fails."""
    folder = Path(folder)
    manifest, problems = _manifest_problems(folder)
    files = (manifest or {}).get("files")
    if isinstance(files, dict) and not problems:
        problems += _listed_problems(folder, files, deep)
    present = [p for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MANIFEST]
    for path in present:
        rel = path.relative_to(folder).as_posix()
        if not any(rel in p for p in problems):
            problem = file_problem(path, deep=deep)
            if problem:
                problems.append(f"{rel}: {problem}")
    status = "damaged" if problems else ("ok" if isinstance(files, dict) else "unverifiable")
    return EntryReport(folder, status, problems, len(present), sum(p.stat().st_size for p in present))


def _remove(folder: Path) -> None:
    """Remove an entry: renamed aside first, so an interrupted removal never leaves a damaged entry."""
    aside = folder.with_name(folder.name + REMOVING)
    if aside.exists():
        shutil.rmtree(aside)
    folder.rename(aside)
    shutil.rmtree(aside)


def keyed(params: dict) -> dict:
    """What an entry's key is made of: ``params``, plus the training thread count when it is not the
    default (trained on another count, the weights differ, so the entries must too: ``tda.threads``)."""
    threads = training_threads()
    return params if threads == DEFAULT_THREADS else {**params, "training_threads": threads}


class Store:
    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else default_root()

    def path(self, stage: str, params: dict) -> Path:
        if not stage or "/" in stage or stage.startswith("."):
            raise ValueError(f"bad stage name {stage!r}")
        return self.root / stage / param_key(keyed(params))

    def has(self, stage: str, params: dict) -> bool:
        return (self.path(stage, params) / MANIFEST).is_file()

    def manifest(self, stage: str, params: dict) -> dict:
        path = self.path(stage, params) / MANIFEST
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"no complete artifact for stage {stage!r} at {path.parent}") from None
        except json.JSONDecodeError as err:
            raise DamagedEntryError(f"corrupt manifest {path}: {err}; {remove_advice(path.parent)}") from err

    def get_or_create(self, stage: str, params: dict, build: Callable[[Path], Any],
                      resumable: bool = False, check: Callable[[Path], list[str]] | None = None) -> Path:
        """The folder of a complete artifact, building it with ``build(work_dir)`` if needed.

        Builds of one key are serialised across processes by a lock file, so two notebooks that
        ask for the same base model at once build it once: the second waits, then reuses it.
        A damaged entry (see the module's docstring) is removed, with a warning, and built again.
        ``check(folder)``, if given, lists what else is wrong with an existing entry (a training
        run's missing checkpoint folders: ``tda.checkpoints.run_problems``); it covers entries
        written before manifests listed their files, whose deleted files the store cannot see.
        """
        params = keyed(params)  # the manifest records what the key was made of
        final = self.path(stage, params)
        if (final / MANIFEST).is_file() and not self._damage(stage, params, final, check):
            return final  # the common case needs no lock
        with self._locked(final):
            return self._build(stage, params, build, resumable, final, check)

    @contextmanager
    def _locked(self, final: Path):
        """Hold the lock of one key (across processes) for the duration of the block."""
        final.parent.mkdir(parents=True, exist_ok=True)
        with open(final.with_name(final.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def discard(self, stage: str, params: dict, reason: str) -> None:
        """Remove an entry found damaged while reading it (with a warning naming it and ``reason``),
        so that the next ``get_or_create`` builds it again. For readers that find what the cheap
        check cannot: a corrupt file of unchanged size, say."""
        final = self.path(stage, params)
        with self._locked(final):
            if final.exists():
                warnings.warn(f"store entry {final} is damaged: {reason}. Removing it; it is built again "
                              "when next asked for", stacklevel=2)
                _remove(final)

    def _damage(self, stage: str, params: dict, final: Path,
                check: Callable[[Path], list[str]] | None = None) -> list[str]:
        """What is wrong with an existing entry, cheaply: its manifest, each listed file's presence
        and size, then ``check``'s findings. A manifest for other parameters is an error, never
        removed."""
        manifest, problems = _manifest_problems(final)
        if manifest is not None and manifest.get("params") != _plain(params):
            raise StoreError(f"{final} holds an artifact for other parameters; not touching it. If it is "
                             f"stale, {remove_advice(final)}")
        files = (manifest or {}).get("files")
        if isinstance(files, dict) and not problems:
            problems = _listed_problems(final, files, deep=False)
        if check is not None and not problems:
            problems = list(check(final))
        return problems

    def _build(self, stage: str, params: dict, build: Callable[[Path], Any], resumable: bool,
               final: Path, check: Callable[[Path], list[str]] | None = None) -> Path:
        if final.exists():
            problems = self._damage(stage, params, final, check)
            if not problems:  # built by another process while we waited
                return final
            more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
            warnings.warn(f"store entry {final} is damaged: {'; '.join(problems[:3])}{more}. Removing it and "
                          "building it again", stacklevel=3)
            _remove(final)
        work = final.with_name(final.name + ".partial")
        if work.exists() and not resumable:
            shutil.rmtree(work)
        work.mkdir(parents=True, exist_ok=True)
        start = time.time()
        build(work)
        manifest = {"stage": stage, "key": final.name, "params": _plain(params),
                    "versions": _versions(), "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                    "seconds": round(time.time() - start, 3), "files": list_files(work)}
        tmp = work / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(manifest, indent=1))
        tmp.rename(work / MANIFEST)
        work.rename(final)
        return final

    def get_json(self, stage: str, params: dict, compute: Callable[[], Any], name: str = "data.json") -> Any:
        """A JSON-able value cached in the store (computed once per parameter set; computed again
        if the stored file turns out corrupt)."""
        def build(work: Path) -> None:
            (work / name).write_text(json.dumps(compute()))
        folder = self.get_or_create(stage, params, build)
        try:
            return read_json(folder / name)
        except DamagedEntryError as err:
            self.discard(stage, params, err.problem)
        return read_json(self.get_or_create(stage, params, build) / name)

    def entries(self) -> list[Path]:
        """Every complete-or-damaged entry folder (``<stage>/<key>``), sorted."""
        if not self.root.is_dir():
            return []
        return sorted(p for stage in self.root.iterdir() if stage.is_dir() and not stage.name.startswith(".")
                      for p in stage.iterdir() if p.is_dir() and KEY_RE.fullmatch(p.name))

    def leftovers(self) -> list[Path]:
        """Folders of interrupted removals (``<key>.removing``): safe to delete."""
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.glob(f"*/*{REMOVING}") if p.is_dir())


# ---- python -m tda.store verify ------------------------------------------------------------------------
def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def verify(store: Store, fix: bool = False, deep: bool = True, strict: bool = False,
           out=sys.stdout) -> int:
    """Check every entry of ``store`` and print one line per entry; with ``fix`` remove damaged
    entries (with ``strict`` also unverifiable ones). Returns the number of damaged entries left."""
    reports = [verify_entry(folder, deep=deep) for folder in store.entries()]
    left = 0
    for r in reports:
        name = r.folder.relative_to(store.root).as_posix()
        bad = r.status == "damaged" or (strict and r.status == "unverifiable")
        action = ""
        if bad and fix:
            _remove(r.folder)
            action = " -> removed (the next run rebuilds it)"
        elif bad:
            left += 1
        if r.status == "ok":
            print(f"ok            {name}  ({r.n_files} files, {_size(r.n_bytes)})", file=out)
        elif r.status == "unverifiable":
            print(f"unverifiable  {name}  ({r.n_files} files, {_size(r.n_bytes)}; written before manifests "
                  f"listed their files, so a deleted file cannot be detected; its files are well-formed)"
                  f"{action}", file=out)
        else:
            print(f"DAMAGED       {name}{action}", file=out)
            for problem in r.problems:
                print(f"                {problem}", file=out)
    for aside in store.leftovers():
        if fix:
            shutil.rmtree(aside)
        print(f"leftover      {aside.relative_to(store.root).as_posix()} (an interrupted removal)"
              + (" -> removed" if fix else ""), file=out)
    counts = {s: sum(r.status == s for r in reports) for s in ("ok", "damaged", "unverifiable")}
    print(f"{len(reports)} entries in {store.root}: {counts['ok']} ok, {counts['damaged']} damaged, "
          f"{counts['unverifiable']} unverifiable" + (" (checked sizes and formats, not hashes)" if not deep else ""),
          file=out)
    root = f" --root {store.root}" if store.root != default_root() else ""
    if left:
        print(f"remove the damaged entries with `python -m tda.store verify --fix{' --strict' if strict else ''}"
              f"{root}`; the next run rebuilds them", file=out)
    elif counts["unverifiable"] and not (fix and strict):
        print(f"unverifiable entries are used as they are; to rebuild them with a file list: "
              f"`python -m tda.store verify --fix --strict{root}`", file=out)
    return left


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tda.store", description="Check the artifact store.")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("verify", help="check every entry (files present, sizes, hashes, formats)")
    check.add_argument("--fix", action="store_true", help="remove damaged entries (the next run rebuilds them)")
    check.add_argument("--quick", action="store_true", help="sizes and file formats only, no hashes")
    check.add_argument("--strict", action="store_true",
                       help="count entries without a file list (written by older versions) as damaged")
    check.add_argument("--root", default=None, help="the store folder (default: $TDA_STORE or .store/)")
    args = parser.parse_args(argv)
    store = Store(args.root)
    if not store.root.is_dir():
        print(f"no store at {store.root}", file=sys.stderr)
        return 2
    return 1 if verify(store, fix=args.fix, deep=not args.quick, strict=args.strict) else 0


if __name__ == "__main__":
    sys.exit(main())
