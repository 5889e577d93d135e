"""Store integrity: file lists in manifests, damaged entries rebuilt, `python -m tda.store verify`."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from tda import store as st
from tda.store import DamagedEntryError, Store, StoreError


def _checkpoints(work, calls):
    """A build that writes what a training entry holds: epoch folders of model, optimizer, JSON."""
    calls.append(1)
    for epoch in range(3):
        ckpt = work / f"epoch-{epoch:03d}"
        ckpt.mkdir()
        save_file({"w": torch.full((4, 4), float(epoch)), "b": torch.zeros(4)}, ckpt / "model.safetensors")
        torch.save({"step": epoch, "m": torch.ones(8)}, ckpt / "optimizer.pt")
        (ckpt / "state.json").write_text(json.dumps({"epoch": epoch}))
        (ckpt / "tokenizer.json").write_text(json.dumps({"vocab": ["a", "b", "c"] * 10}))
    np.save(work / "scores.npy", np.arange(12.0))


@pytest.fixture
def built(tmp_path):
    store, calls = Store(tmp_path / "store"), []
    folder = store.get_or_create("base", {"n": 1}, lambda w: _checkpoints(w, calls), resumable=True)
    return store, folder, calls


def _again(store, calls):
    return store.get_or_create("base", {"n": 1}, lambda w: _checkpoints(w, calls), resumable=True)


def test_manifest_lists_every_file_with_size_and_hash(built):
    store, folder, _ = built
    files = json.loads((folder / "manifest.json").read_text())["files"]
    on_disk = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                     if p.is_file() and p.name != "manifest.json")
    assert sorted(files) == on_disk and len(on_disk) == 13
    for rel, info in files.items():
        assert info["size"] == (folder / rel).stat().st_size
        assert info["sha256"] == st.file_digest(folder / rel)
    # the key is unchanged by the file list: the same parameters name the same folder as before
    assert folder.name == st.param_key({"n": 1})


def test_deleted_checkpoint_folder_is_rebuilt_not_silently_used(built):
    """Before: the entry still counted as complete and epoch-001 became the last checkpoint."""
    store, folder, calls = built
    shutil.rmtree(folder / "epoch-002")
    with pytest.warns(UserWarning, match=r"store entry .*base.* is damaged: epoch-002/\S+ is missing.*building it again"):
        again = _again(store, calls)
    assert again == folder and len(calls) == 2
    assert (folder / "epoch-002" / "model.safetensors").is_file()
    assert not list(folder.parent.glob("*.removing")) and not list(folder.parent.glob("*.partial"))
    assert st.verify_entry(folder).status == "ok"


def test_a_check_finds_what_an_old_entry_cannot_show(built):
    """An entry written before file lists: the store cannot see a deleted folder, but a caller that
    knows what the entry must hold can (``check``); the entry is then rebuilt, with a warning."""
    store, folder, calls = built
    _legacy(folder)
    shutil.rmtree(folder / "epoch-002")
    assert _again(store, calls) == folder and len(calls) == 1  # unseen without a check

    def check(entry):
        return [] if (entry / "epoch-002").is_dir() else ["epoch-002 is missing"]

    with pytest.warns(UserWarning, match=r"store entry .*base.* is damaged: epoch-002 is missing.*building it again"):
        again = store.get_or_create("base", {"n": 1}, lambda w: _checkpoints(w, calls), resumable=True, check=check)
    assert again == folder and len(calls) == 2 and (folder / "epoch-002" / "model.safetensors").is_file()
    assert store.get_or_create("base", {"n": 1}, None, check=check) == folder  # sound now: reused, not built


@pytest.mark.parametrize("damage", ["truncate", "missing manifest", "corrupt manifest"])
def test_damaged_entry_is_rebuilt(built, damage):
    store, folder, calls = built
    if damage == "truncate":
        ckpt = folder / "epoch-002" / "model.safetensors"
        ckpt.write_bytes(ckpt.read_bytes()[:-10])
        expected = r"epoch-002/model\.safetensors has \d+ bytes"
    elif damage == "missing manifest":
        (folder / "manifest.json").unlink()
        expected = "manifest.json is missing"
    else:
        (folder / "manifest.json").write_text('{"stage": "base", "par')
        expected = "manifest.json is unreadable"
    with pytest.warns(UserWarning, match=expected):
        _again(store, calls)
    assert len(calls) == 2 and st.verify_entry(folder).status == "ok"


def test_cheap_check_leaves_same_size_corruption_to_verify(built):
    """get_or_create checks sizes only; verify's hashes and format checks find the rest."""
    store, folder, calls = built
    path = folder / "epoch-001" / "tokenizer.json"
    text = path.read_text()
    path.write_text(text.replace('"a"', '"z"', 1))  # same size, other content
    _again(store, calls)
    assert len(calls) == 1
    report = st.verify_entry(folder)
    assert report.status == "damaged" and report.problems == [
        "epoch-001/tokenizer.json differs from what was stored (SHA-256 mismatch: corrupt)"]
    assert st.verify_entry(folder, deep=False).status == "ok"  # --quick: sizes and formats only


def test_manifest_for_other_parameters_is_still_refused(built):
    store, folder, calls = built
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["params"] = {"n": 2}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(StoreError, match=r"other parameters; not touching it.*rm -rf"):
        _again(store, calls)
    assert len(calls) == 1 and (folder / "epoch-002").is_dir()


def _legacy(folder):
    """Make an entry look written by the code before file lists (5a2a892)."""
    manifest = json.loads((folder / "manifest.json").read_text())
    del manifest["files"]
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_legacy_entry_loads_and_is_reported_unverifiable(built):
    store, folder, calls = built
    _legacy(folder)
    assert _again(store, calls) == folder and len(calls) == 1  # still used, not rebuilt
    assert st.verify_entry(folder).status == "unverifiable"
    out = io.StringIO()
    assert st.verify(store, out=out) == 0
    assert "unverifiable  base/" in out.getvalue() and "a deleted file cannot be detected" in out.getvalue()
    # what can be checked without a list still is: a truncated checkpoint or optimizer, a corrupt JSON
    ckpt = folder / "epoch-001"
    (ckpt / "model.safetensors").write_bytes((ckpt / "model.safetensors").read_bytes()[:-7])
    (ckpt / "optimizer.pt").write_bytes((ckpt / "optimizer.pt").read_bytes()[:200])
    (folder / "epoch-002" / "state.json").write_text('{"epoch": ')
    report = st.verify_entry(folder)
    assert report.status == "damaged"
    assert [p.split(":")[0] for p in report.problems] == [
        "epoch-001/model.safetensors", "epoch-001/optimizer.pt", "epoch-002/state.json"]
    # --strict removes unverifiable entries too
    _checkpoints_store = Store(store.root.parent / "other")
    other = _checkpoints_store.get_or_create("s", {"m": 1}, lambda w: (w / "v.json").write_text("1"))
    _legacy(other)
    assert st.verify(_checkpoints_store, fix=True, out=io.StringIO()) == 0 and other.is_dir()
    assert st.verify(_checkpoints_store, fix=True, strict=True, out=io.StringIO()) == 0 and not other.exists()


def test_verify_reports_then_fix_removes_damaged_entries(built):
    store, folder, calls = built
    healthy = store.get_or_create("world", {"w": 1}, lambda w: (w / "world.json").write_text('{"a": 1}'))
    (folder / "epoch-000" / "optimizer.pt").unlink()
    (store.root / "base" / ("0" * 16 + ".removing")).mkdir()  # an interrupted removal
    out = io.StringIO()
    assert st.verify(store, out=out) == 1
    text = out.getvalue()
    assert f"DAMAGED       base/{folder.name}" in text and "epoch-000/optimizer.pt is missing" in text
    assert f"ok            world/{healthy.name}" in text and "leftover" in text
    assert "2 entries" in text and "1 ok, 1 damaged" in text and "verify --fix" in text
    assert folder.is_dir()  # reporting removes nothing
    out = io.StringIO()
    assert st.verify(store, fix=True, out=out) == 0
    assert "-> removed" in out.getvalue() and not folder.exists() and healthy.is_dir()
    assert not list(store.root.glob("*/*.removing"))
    _again(store, calls)  # the next run rebuilds it
    assert len(calls) == 2 and st.verify_entry(folder).status == "ok"


def test_verify_command_line(built, tmp_path):
    store, folder, _ = built
    (folder / "epoch-001" / "state.json").unlink()
    cmd = [sys.executable, "-m", "tda.store", "verify", "--root", str(store.root)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1 and "epoch-001/state.json is missing" in run.stdout, run.stdout + run.stderr
    run = subprocess.run(cmd + ["--fix"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "removed" in run.stdout and not folder.exists()
    run = subprocess.run([sys.executable, "-m", "tda.store", "verify", "--root", str(tmp_path / "none")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "no store at" in run.stderr


def test_file_problem_knows_the_formats(tmp_path):
    save_file({"w": torch.ones(3, 3)}, tmp_path / "m.safetensors")
    torch.save({"x": torch.ones(100)}, tmp_path / "o.pt")
    np.save(tmp_path / "a.npy", np.ones((5, 2)))
    np.savez(tmp_path / "b.npz", a=np.ones(50))
    (tmp_path / "c.json").write_text('{"a": [1, 2]}')
    (tmp_path / "d.txt").write_text("anything")
    for path in tmp_path.iterdir():
        assert st.file_problem(path, deep=True) is None, path
    for name, cut in (("m.safetensors", -1), ("m.safetensors", 5), ("o.pt", -30), ("a.npy", -8), ("b.npz", -40),
                      ("c.json", -3)):
        path = tmp_path / name
        good = path.read_bytes()
        path.write_bytes(good[:cut])
        assert st.file_problem(path), name
        path.write_bytes(good)
    (tmp_path / "m.safetensors").write_bytes((tmp_path / "m.safetensors").read_bytes() + b"\0")
    assert "padded" in st.file_problem(tmp_path / "m.safetensors")
    assert st.file_problem(tmp_path / "gone.json") == "missing"


def test_read_json_names_file_entry_and_command(built):
    store, folder, _ = built
    path = folder / "epoch-001" / "state.json"
    assert st.read_json(path) == {"epoch": 1}
    path.write_text('{"epoch": ')
    with pytest.raises(DamagedEntryError) as err:
        st.read_json(path)
    message = str(err.value)
    assert str(path) in message and "corrupt or truncated JSON" in message
    assert f"store entry {folder}" in message and f"rm -rf '{folder}'" in message and "verify --fix" in message
    outside = folder.parent.parent.parent / "loose.json"
    outside.write_text("[")
    with pytest.raises(DamagedEntryError, match=r"loose\.json: corrupt or truncated JSON \(") as err:
        st.read_json(outside)
    assert "store entry" not in str(err.value)


def test_get_json_recomputes_a_corrupt_value(tmp_path):
    """A corruption of the same size passes the cheap check; get_json finds it and recomputes."""
    store, calls = Store(tmp_path), []
    assert store.get_json("j", {"a": 1}, lambda: calls.append(1) or [1]) == [1]
    (store.path("j", {"a": 1}) / "data.json").write_text("[1,")
    with pytest.warns(UserWarning, match=r"store entry .*j/\w+ is damaged: .*data\.json: corrupt or truncated JSON"):
        assert store.get_json("j", {"a": 1}, lambda: calls.append(1) or [1]) == [1]
    assert len(calls) == 2 and st.verify_entry(store.path("j", {"a": 1})).status == "ok"
    # discard on an entry that is already gone does nothing
    shutil.rmtree(store.path("j", {"a": 1}))
    store.discard("j", {"a": 1}, "test")


def test_cheap_check_cost(built):
    """The check get_or_create adds is a stat per listed file: sub-millisecond for a small entry."""
    store, folder, calls = built
    start = time.perf_counter()
    for _ in range(50):
        _again(store, calls)
    assert len(calls) == 1 and (time.perf_counter() - start) / 50 < 0.05
