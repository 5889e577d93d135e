"""Part I's pipeline (``tda.experiments.ftrace.pipeline``): settings, runs, stored parts.

Tiny worlds and tiny models only; every test checks a property (equality with the engine's own
methods, the store's reuse, errors on bad input), not just that code runs.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tda import base
from tda.checkpoints import list_checkpoints, read_state, second_moments
from tda.data import ftrace as ft
from tda.experiments.ftrace import analysis as A
from tda.experiments.ftrace import pipeline as P
from tda.methods import bm25, embed, tracin
from tda.models import load_model
from tda.params import ParamsError

from .conftest import FAST, TREX


# ---------------------------------------------------------------------------------------------
# settings and checkpoints
# ---------------------------------------------------------------------------------------------
def test_settings_come_from_params_yml_and_unknown_names_are_errors():
    s = P.FtraceSettings.for_world("default", "trex", {"epochs": 3})
    assert s.epochs == 3 and s.dataset == "trex"
    quick = P.FtraceSettings.for_world("quick", "synth")
    assert (quick.synth_facts, quick.epochs, quick.k, quick.max_learned) == (24, 12, 100, None)
    # the dataclass defaults are the default world's TREx analogue
    assert P.FtraceSettings.for_world("default", "trex") == P.FtraceSettings()
    with pytest.raises(ParamsError, match="unknown world 'no-such-world'; known worlds: quick, default"):
        P.FtraceSettings.for_world("no-such-world", "synth")
    with pytest.raises(ValueError, match="unknown FTRACE settings"):
        P.FtraceSettings.for_world("quick", "trex", {"epoch": 3})
    with pytest.raises(ValueError, match="dataset must be one of"):
        P.FtraceSettings.for_world("quick", "lama")
    with pytest.raises(ValueError, match="unknown relation ids"):
        P.FtraceSettings.for_world("quick", "trex", {"relations": ["P19", "P9999"]})
    with pytest.raises(ValueError, match="on_missing"):
        P.FtraceSettings.for_world("quick", "trex", {"on_missing": "ignore"})
    with pytest.raises(ValueError, match="chosen by the argument"):
        P.FtraceSettings.for_world("quick", "trex", {"dataset": "synth"})


def test_pick_checkpoints():
    paths = [Path(f"epoch-{i:03d}") for i in range(9)]
    assert [p.name for p in P.pick_checkpoints(paths, 4)] == ["epoch-002", "epoch-004", "epoch-006", "epoch-008"]
    assert [p.name for p in P.pick_checkpoints(paths, 1)] == ["epoch-008"]
    assert [p.name for p in P.pick_checkpoints(paths[:3], 4)] == ["epoch-001", "epoch-002"]
    with pytest.raises(ValueError, match="no trained checkpoint"):
        P.pick_checkpoints(paths[:1], 2)


def test_synth_entity_count_keeps_the_papers_slot_density():
    s = P.FtraceSettings(dataset="synth", synth_facts=40, relations=("P19", "P27"))
    assert P.synth_entity_count(s) == max(4, round(40 / (P.SYNTH_SLOT_DENSITY * 2)))
    assert P.synth_entity_count(P.FtraceSettings(dataset="synth", synth_entities=7)) == 7


# ---------------------------------------------------------------------------------------------
# a whole run
# ---------------------------------------------------------------------------------------------
def test_prepare_builds_a_consistent_run(setup, trex_run):
    run = trex_run
    q = run.data.queries
    assert len(run.query_rows) == len(q) == 12  # no caps: every query attributed
    assert run.query_slice == ["learned" if l else "known" if b else "other"
                               for l, b in zip(run.slices["learned"], run.slices["correct_before"])]
    for row, cands in zip(run.query_rows, run.candidates.indices):
        assert set(q[row]["proponents"]) <= set(cands) and len(cands) == len(set(cands))
    # pairs and union line up with the candidate lists
    qj, cc = run.pairs()
    union = run.union
    assert [union[c] for c in cc] == [c for cands in run.candidates.indices for c in cands]
    assert len(qj) == sum(len(c) for c in run.candidates.indices)
    # the fine-tuning run: epoch-000 is the base model, one checkpoint per epoch, AdamW state in each
    ckpts = list_checkpoints(run.finetune_dir)
    assert [c.name for c in ckpts] == ["epoch-000", "epoch-001", "epoch-002"]
    assert second_moments(ckpts[-1])
    assert read_state(ckpts[-1])["n_examples"] == len(run.data.abstracts)
    base_final = base.base_checkpoints(setup, "tiny", FAST["pretrain"])[-1]
    a, _ = load_model(ckpts[0])
    b, _ = load_model(base_final)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    # the slices are those of the query_slices function at the start and end of fine-tuning
    after, _ = load_model(ckpts[-1])
    direct = ft.query_slices(q, a, after, setup.task())
    for key, values in direct.items():
        assert run.slices[key] == (pytest.approx(values, rel=1e-5) if key.startswith("loss") else values)
    # a second prepare reads everything back from the store: same run
    again = P.prepare(setup, run.settings, seed=0, verbose=False)
    assert again.finetune_dir == run.finetune_dir and again.candidates.indices == run.candidates.indices
    info = run.query_info()
    assert list(info["slice"]) == run.query_slice
    assert list(info["n_proponents"]) == [len(run.data.queries[r]["proponents"]) for r in run.query_rows]


def test_seed_changes_queries_and_finetuning(setup, trex_run):
    s = trex_run.settings
    other = P.build_data(setup.world, s, seed=1)
    assert set(other.queries["uuid"]) != set(trex_run.data.queries["uuid"])
    keys = [P._finetune_key(setup, s, seed, P.build_data(setup.world, s, seed)) for seed in (0, 1)]
    assert keys[0]["train"]["seed"] == 0 and keys[1]["train"]["seed"] == 1 and keys[0]["data"] != keys[1]["data"]
    # settings that do not touch the fine-tuning leave its key alone (so the store reuses the run)
    assert P._finetune_key(setup, P.FtraceSettings.for_world("quick", "trex", {**TREX, "k": 9}), 0, trex_run.data) == keys[0]
    assert setup.store.path("ftrace-finetune", keys[0]) == trex_run.finetune_dir


def test_query_selection_caps_and_order():
    slices = {"correct_before": [True, False, False, True, False, False],
              "learned": [False, True, True, False, True, False]}
    s = P.FtraceSettings.for_world("quick", "trex", {"max_learned": 2, "max_known": 1, "max_other": 0})
    rows, names = P.select_queries(slices, s, seed=0)
    assert len(rows) == 3 and rows == sorted(rows)
    assert names.count("learned") == 2 and names.count("known") == 1
    assert rows == P.select_queries(slices, s, seed=0)[0]  # seeded
    rows, _ = P.select_queries(slices, s, seed=0, eligible=[True, False, False, True, True, True])
    assert set(rows) <= {0, 3, 4, 5}


def test_query_without_proponent_is_an_error_or_a_counted_skip(setup, monkeypatch):
    real = P.build_data

    def drop_one(world, s, seed):
        data = real(world, s, seed)
        q = data.queries.map(lambda r, i: {"proponents": [] if i == 2 else r["proponents"]}, with_indices=True)
        return ft.FtraceData(q, data.abstracts)

    monkeypatch.setattr(P, "build_data", drop_one)
    s = P.FtraceSettings.for_world("quick", "trex", {**FAST, "n_queries": 12, "max_learned": None, "max_known": None,
                                      "max_other": None})
    with pytest.raises(ValueError, match="1 of 12 queries have no proponent"):
        P.prepare(setup, s, seed=0, verbose=False)
    run = P.prepare(setup, P.FtraceSettings.for_world("quick", "trex", {**FAST, "n_queries": 12, "max_learned": None,
                                                           "max_known": None, "max_other": None,
                                                           "on_missing": "skip"}), seed=0, verbose=False)
    assert run.candidates.skipped == 1 and run.candidates.skipped_rows == [2] and 2 not in run.query_rows
    assert len(run.query_rows) == 11


# ---------------------------------------------------------------------------------------------
# stored parts: each equals the engine's method computed directly
# ---------------------------------------------------------------------------------------------
def test_tracin_parts_equal_the_engines_tracin(trex_run):
    run = trex_run
    task = run.setup.task()
    queries, cands = run.query_examples(), run.candidate_examples()
    for which in ("ft", "pt"):
        parts = P.stored_tracin_parts(run, which, verbose=False)
        ckpts = run.checkpoints(which)
        assert parts.checkpoints == [c.name for c in ckpts] and len(ckpts) == 2
        assert parts.units == ["embedding", "block.0", "block.1", "head", "other"]
        cases = [("all", "all", "cosine", True)]
        if which == "ft":
            cases += [("all", "all", "dot", False), ("embedding", "embedding", "cosine", True),
                      (["block.1", "head"], ["block.1", "head"], "dot", True)]
        for group, units, similarity, corrected in cases:
            want = tracin(ckpts, task, queries, cands, group=group, similarity=similarity, correction=corrected)
            got = A.tracin_scores(run, parts, units=units, similarity=similarity, corrected=corrected)
            for a, b in zip(got, run.from_matrix(want)):
                np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-6 * max(1.0, np.abs(b).max()))
        # a single checkpoint is TracIn over that checkpoint alone
        one = tracin(ckpts[:1], task, queries, cands, similarity="cosine", correction=True)
        got = A.tracin_scores(run, parts, checkpoints=[0], similarity="cosine", corrected=True)
        np.testing.assert_allclose(np.concatenate(got), np.concatenate(run.from_matrix(one)), rtol=2e-4, atol=1e-6)
    # the query gradient norms are those of the parts
    norms = parts.query_norms("all")
    assert norms.shape == (2, len(run.query_rows)) and (norms > 0).all()
    with pytest.raises(ValueError, match="unknown parameter units"):
        parts.scores(units="block.7")


def test_embed_bm25_and_baselines_equal_the_engine(trex_run, synth_run):
    for run in (trex_run, synth_run):
        task = run.setup.task()
        parts = P.stored_embed_parts(run, verbose=False)
        assert parts.n_layers == 3
        for layers in (0, [2], [0, 1]):
            for pooling in ("tokens", "target"):
                want = embed(run.final_model_dir(), task, run.query_examples(), run.candidate_examples(), layers,
                             pooling=pooling)
                got = A.embed_scores(run, parts, layers, pooling)
                np.testing.assert_allclose(np.concatenate(got), np.concatenate(run.from_matrix(want)), atol=1e-9)
        with pytest.raises(ValueError, match="do not exist"):
            parts.scores(5)
        # BM25 over the whole attribution set, read at the candidates
        q = run.data.queries.select(run.query_rows)
        full = bm25([ft.filled_text(i, t) for i, t in zip(q["inputs_pretokenized"], q["targets_pretokenized"])],
                    [ft.filled_text(i, t) for i, t in zip(run.data.abstracts["inputs_pretokenized"],
                                                          run.data.abstracts["targets_pretokenized"])])
        for j, (got, cands) in enumerate(zip(A.bm25_scores(run), run.candidates.indices)):
            np.testing.assert_allclose(got, full[j, cands])


def test_a_checkpoint_folder_deleted_from_an_old_finetune_entry_is_rebuilt(setup, trex_run):
    """Issue 15: in an entry written before manifests listed their files, a deleted last epoch went
    unnoticed and the epoch before it passed for the fine-tuned model."""
    folder = trex_run.finetune_dir
    last = list_checkpoints(folder)[-1]
    weights = (last / "model.safetensors").read_bytes()
    manifest = json.loads((folder / "manifest.json").read_text())
    del manifest["files"]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    shutil.rmtree(last)
    with pytest.warns(UserWarning, match=rf"is damaged: .*{last.name} is missing"):
        again = P.finetune_attribution_set(setup, trex_run.settings, trex_run.seed, trex_run.data)
    assert again == folder and (last / "model.safetensors").read_bytes() == weights


def test_load_runs_reads_the_store_and_refuses_unknown_data_sets(setup, trex_run):
    (rp,) = P.load_runs(setup, "quick", [0], {"trex": TREX}, datasets=["trex"], verbose=False)
    assert rp.run.finetune_dir == trex_run.finetune_dir and rp.run.candidates.indices == trex_run.candidates.indices
    assert rp.tracin_ft.checkpoints == [c.name for c in trex_run.checkpoints("ft")]
    with pytest.raises(ValueError, match="unknown data sets"):
        P.load_runs(setup, "quick", [0], {"lama": {}})
    with pytest.raises(ValueError, match="no seeds"):
        P.load_runs(setup, "quick", [], {"trex": TREX})
