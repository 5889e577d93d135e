import json

import pytest

from tda.store import Store, StoreError, param_key


def test_key_ignores_order_and_int_float_spelling():
    assert param_key({"a": 1, "b": [1, 2]}) == param_key({"b": [1, 2], "a": 1.0})
    assert param_key({"a": 1}) != param_key({"a": 2})


def test_build_once_then_reuse(tmp_path):
    store, calls = Store(tmp_path), []

    def build(work):
        calls.append(1)
        (work / "x.txt").write_text("hello")

    p1 = store.get_or_create("stage", {"n": 1}, build)
    p2 = store.get_or_create("stage", {"n": 1}, build)
    assert p1 == p2 and len(calls) == 1 and (p1 / "x.txt").read_text() == "hello"
    manifest = store.manifest("stage", {"n": 1})
    assert manifest["params"] == {"n": 1} and "torch" in manifest["versions"] and manifest["created"]


def test_failure_mid_write_leaves_no_artifact(tmp_path):
    store = Store(tmp_path)

    def broken(work):
        (work / "half.txt").write_text("half")
        raise KeyboardInterrupt  # a killed run

    with pytest.raises(KeyboardInterrupt):
        store.get_or_create("stage", {"n": 2}, broken)
    assert not store.has("stage", {"n": 2})
    assert not store.path("stage", {"n": 2}).exists()
    # the next run starts afresh (a non-resumable stage does not see the half file)
    seen = []
    store.get_or_create("stage", {"n": 2}, lambda w: seen.append(sorted(p.name for p in w.iterdir())))
    assert seen == [[]] and store.has("stage", {"n": 2})


def test_resumable_stage_sees_its_partial_work(tmp_path):
    store = Store(tmp_path)

    def first(work):
        (work / "epoch-1").write_text("done")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        store.get_or_create("train", {"n": 3}, first, resumable=True)
    seen = []
    store.get_or_create("train", {"n": 3}, lambda w: seen.append((w / "epoch-1").read_text()), resumable=True)
    assert seen == ["done"]


def test_existing_artifact_is_never_overwritten(tmp_path):
    store = Store(tmp_path)
    path = store.get_or_create("stage", {"n": 4}, lambda w: (w / "v").write_text("1"))
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["params"] = {"n": 5}
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(StoreError, match="other parameters"):
        store.get_or_create("stage", {"n": 4}, lambda w: (w / "v").write_text("2"))
    assert (path / "v").read_text() == "1"




def test_bad_parameters_and_stage(tmp_path):
    store = Store(tmp_path)
    with pytest.raises(TypeError, match="JSON-like"):
        store.path("stage", {"f": object()})
    with pytest.raises(ValueError, match="stage"):
        store.path("../x", {})


def test_get_json_caches(tmp_path):
    store, calls = Store(tmp_path), []
    assert store.get_json("j", {"a": 1}, lambda: calls.append(1) or {"v": 2}) == {"v": 2}
    assert store.get_json("j", {"a": 1}, lambda: calls.append(1) or {"v": 3}) == {"v": 2}
    assert len(calls) == 1


def test_concurrent_builds_of_one_key_build_once(tmp_path):
    """Two processes asking for the same artifact: one builds, the other waits and reuses it."""
    import subprocess
    import sys

    script = (
        "import sys, time, pathlib\n"
        "from tda.store import Store\n"
        "def build(w):\n"
        "    log = pathlib.Path(sys.argv[1]) / 'builds.log'\n"
        "    with open(log, 'a') as f: f.write('x')\n"
        "    time.sleep(1.0)\n"
        "    (w / 'v').write_text('1')\n"
        "print(Store(sys.argv[1]).get_or_create('s', {'n': 1}, build))\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert outs[0] == outs[1]
    assert (tmp_path / "builds.log").read_text() == "x"


def test_text_digest_separates_texts_and_is_stable():
    from tda.store import text_digest

    assert text_digest(["ab"]) != text_digest(["a", "b"]) != text_digest(["a", "b", ""])
    assert text_digest(["a", "b"]) == text_digest(iter(["a", "b"])) and len(text_digest([])) == 16
    # the key of stored artifacts: a change in this function silently orphans every store
    assert text_digest(["England", "China"]) == __import__("hashlib").sha256(b"England\0China\0").hexdigest()[:16]
