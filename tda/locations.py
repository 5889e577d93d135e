"""Is a source a local path or a Hugging Face hub name? Decided by syntax and existence, at once.

Every loader that takes "a local path or a hub name" (``load_ftrace``, ``load_xsum``,
``load_model``) asks here first, so that a path that does not exist fails in milliseconds with a
message naming it, instead of being sent to the hub as a name and failing after ~25 s of retries
with a connection error (what ``load_ftrace("data/ftrace")`` did). The rules, in order:

1. something exists at the path (relative to the working directory, ``~`` expanded): local;
2. it reads as a path (starts with ``.``, ``/`` or ``~``; holds a backslash or more than one
   ``/``; ends with a file suffix the caller names, e.g. ``.jsonl``): a missing local path;
3. it is not a valid hub name (``name`` or ``owner/name``, letters, digits, ``-``, ``_``, ``.``):
   a missing local path;
4. its first part exists here as a folder (``data/ftrace`` with a ``data/`` folder): a missing
   local path, and the message says what that folder holds instead;
5. otherwise a hub name. Unless the hub is in offline mode (``HF_HUB_OFFLINE=1``: the libraries
   then read their cache), one connection to the hub's endpoint is tried (3 s at most, once per
   process); if it fails, the name is refused at once with both readings and the reason.

A refused source raises :class:`SourceNotFoundError` (a ``FileNotFoundError``).
"""

from __future__ import annotations

import os
import re
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence
from urllib.parse import urlparse

# A hub repository id: "name" or "owner/name" (the hub's own rule: word characters, "-" and ".",
# neither starting nor ending with "-" or ".", no "--" or "..").
HUB_ID_RE = re.compile(r"^(?:[A-Za-z0-9](?:[\w.-]*[A-Za-z0-9])?/)?[A-Za-z0-9](?:[\w.-]*[A-Za-z0-9])?$")
PROBE_TIMEOUT_S = 3.0
# Endings that mark a local file (rule 2): the data files the loaders read and saved weights. No hub
# repository id in use ends so.
FILE_SUFFIXES = (".parquet", ".jsonl", ".json", ".csv", ".txt", ".arrow", ".bin", ".safetensors", ".pt")
_probe_cache: dict[str, str | None] = {}


class SourceNotFoundError(FileNotFoundError):
    """A source that is neither an existing local path nor a reachable hub name (the message says
    which reading was taken and why)."""


@dataclass(frozen=True)
class Location:
    """A resolved source: ``kind`` "local" (``path`` set) or "hub" (``name`` set)."""

    kind: str
    path: Path | None = None
    name: str | None = None

    @property
    def is_local(self) -> bool:
        return self.kind == "local"


def hub_offline() -> bool:
    """Whether the Hugging Face libraries are in offline mode (they then read only their cache)."""
    flags = (os.environ.get(k, "") for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return any(f.strip().upper() in ("1", "ON", "YES", "TRUE") for f in flags)


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def hub_unreachable_reason(endpoint: str | None = None, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """None if a TCP connection to the hub's endpoint opens within ``timeout`` seconds, else why not.

    Tried once per endpoint and process (the answer is cached). Runs in a thread, so that a DNS
    lookup that hangs cannot hold the caller longer than ``timeout``.
    """
    endpoint = endpoint or hub_endpoint()
    if endpoint in _probe_cache:
        return _probe_cache[endpoint]
    url = urlparse(endpoint)
    host, port = url.hostname or endpoint, url.port or (80 if url.scheme == "http" else 443)
    result: list[str | None] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(None)
        except OSError as err:
            result.append(f"{host}:{port} cannot be reached ({err.strerror or err})")

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    reason = result[0] if result else f"{host}:{port} did not answer within {timeout:.0f} s"
    _probe_cache[endpoint] = reason
    return reason


def looks_like_path(text: str, suffixes: Sequence[str] = ()) -> bool:
    """Whether ``text`` can only be meant as a local path (rule 2 of the module docstring)."""
    lowered = text.lower()
    return (text.startswith((".", "/", "~")) or "\\" in text or text.count("/") > 1
            or any(lowered.endswith(s.lower()) for s in suffixes))


def _missing(text: str, what: str, path: Path, base: Path, why: str = "") -> SourceNotFoundError:
    shown = f" ({path.resolve()})" if not Path(text).expanduser().is_absolute() else ""
    return SourceNotFoundError(f"no {what} at {text}{shown}: nothing exists at that path{why}. Give an "
                               "existing local file or folder (relative paths are read from "
                               f"{base}), or a Hugging Face hub name such as owner/name")


def _folder_hint(folder: Path) -> str:
    entries = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())[:8]
    return f" ({folder}/ exists and holds: {', '.join(entries) if entries else 'nothing'})"


def resolve(source: str | Path, what: str, suffixes: Sequence[str] = FILE_SUFFIXES, probe: bool = True,
            base: str | Path | None = None) -> Location:
    """Resolve ``source`` to a local path or a hub name by the module's rules; refuse it at once otherwise.

    ``what`` names the thing in messages ("FTRACE folder", "XSum file", "model"); ``suffixes`` are
    file endings that mark a local file (rule 2; default ``FILE_SUFFIXES``); relative paths are
    read from ``base`` (default: the working directory). ``probe=False`` skips the hub connection
    test. A ``Path`` object is always a local path. Raises :class:`SourceNotFoundError` naming
    ``source``.
    """
    base = Path(base) if base is not None else Path.cwd()
    text = str(source).strip()
    if not text:
        raise SourceNotFoundError(f"no {what} given: the source is empty")
    path = Path(text).expanduser()
    if not path.is_absolute():
        path = base / path
    if path.exists():
        return Location("local", path=path)
    if isinstance(source, Path) or looks_like_path(text, suffixes) or not HUB_ID_RE.match(text) \
            or "--" in text or ".." in text:
        raise _missing(text, what, path, base)
    first = base / text.split("/")[0]
    if "/" in text and first.is_dir():
        raise _missing(text, what, path, base, _folder_hint(first))
    if probe and not hub_offline():
        reason = hub_unreachable_reason()
        if reason is not None:
            raise SourceNotFoundError(
                f"no {what} at {text}: nothing exists at that local path ({path.resolve()}), and read as a "
                f"Hugging Face hub name it cannot be fetched: the hub {reason}. Give an existing local file "
                "or folder, connect to the network, or set HF_HUB_OFFLINE=1 to read a copy cached earlier")
    return Location("hub", name=text)


def hub_name(source: str | Path, what: str, suffixes: Sequence[str] = FILE_SUFFIXES) -> str:
    """``source`` as a hub name, for a loader's "not a local path" branch (raises as :func:`resolve`,
    and also when ``source`` turns out to be an existing local path of the wrong kind)."""
    location = resolve(source, what, suffixes)
    if location.is_local:
        raise SourceNotFoundError(f"{location.path} exists but is not a {what}")
    return location.name  # type: ignore[return-value]


__all__ = ["SourceNotFoundError", "Location", "hub_offline", "hub_endpoint", "hub_unreachable_reason",
           "looks_like_path", "resolve", "hub_name", "HUB_ID_RE", "FILE_SUFFIXES"]
