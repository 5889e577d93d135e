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
from tda.data.fidelity import whole_set_bm25
from tda.metrics import chance_mrr
from tda.models import embeddings_tied, load_model
from tda.params import ParamsError

from .conftest import FAST, TREX


# ---------------------------------------------------------------------------------------------
# settings and checkpoints
# ---------------------------------------------------------------------------------------------
def test_settings_come_from_params_yml_and_unknown_names_are_errors():
    s = P.FtraceSettings.for_world("default", "trex", {"epochs": 3})
    assert s.epochs == 3 and s.dataset == "trex"
    quick = P.FtraceSettings.for_world("quick", "synth")
    assert (quick.synth_facts, quick.epochs, quick.k, quick.max_learned) == (60, 12, 100, None)
    assert not quick.tie_embeddings and quick.own_world  # Part I: untied models, a world per seed
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


@pytest.mark.parametrize("bad,match", [
    ({"known_share": 1.5}, r"known_share .* must be in \[0, 1\], got 1.5"),
    ({"known_share": -0.1}, r"must be in \[0, 1\]"),
    ({"ft_checkpoints": (0.5, 0.25, 1.0)}, "ascending"),
    ({"ft_checkpoints": (0.0, 1.0)}, r"in \(0, 1\]"),
    ({"pt_checkpoints": (0.01, 1.5)}, r"in \(0, 1\]"),
    ({"ft_checkpoints": (0.25, 0.5)}, "last of ft_checkpoints must be 1.0"),
    ({"pt_checkpoints": ()}, "pt_checkpoints is empty"),
    ({"lr": 0.0}, "lr must be > 0"),
    ({"n_queries": 0}, "n_queries must be >= 1"),
    ({"beams": 0}, "beams >= 1"),
])
def test_bad_settings_are_clear_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        P.FtraceSettings(**bad)


def test_checkpoint_labels_are_fractions_of_the_run():
    assert [P.checkpoint_label(f) for f in (5 / 80, 0.125, 0.005, 1.0)] == ["6.25%", "12.5%", "0.5%", "100%"]
    assert P.label_fraction("6.25%") == 0.0625
    with pytest.raises(ValueError, match="not a checkpoint label"):
        P.label_fraction("epoch-003")


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
    # the fine-tuning run: epoch-000 is the base model, one checkpoint per epoch, AdamW state in each,
    # and one at 25% of the run (ft_checkpoints), inside epoch 1
    ckpts = list_checkpoints(run.finetune_dir)
    assert [c.name for c in ckpts] == ["epoch-000", "epoch-001", "epoch-002"]
    assert second_moments(ckpts[-1])
    total = read_state(ckpts[-1])["step"]
    assert read_state(ckpts[-1])["n_examples"] == len(run.data.abstracts)
    ft_ckpts = run.finetune_checkpoints()
    assert [c.name for c in ft_ckpts] == [f"step-{round(0.25 * total):06d}", "epoch-002"]
    assert second_moments(ft_ckpts[0])
    # the base model: untied, with its early pre-training checkpoints (pt_checkpoints)
    base_final = base.base_checkpoints(setup, "tiny", FAST["pretrain"], **run.settings.base_kind())[-1]
    a, _ = load_model(ckpts[0])
    b, _ = load_model(base_final)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not embeddings_tied(a)
    pt_total = read_state(base_final)["step"]
    assert [c.name for c in run.pretrain_checkpoints()] == [f"step-{round(f * pt_total):06d}" for f in (0.1, 0.5)]
    # the slices are those of paper_slices at the base model and the TracIn checkpoints
    direct = ft.paper_slices(q, a, ft_ckpts, setup.task())
    for key, values in direct.items():
        if key == "loss_at":  # per checkpoint, per query
            assert len(run.slices[key]) == len(values) == len(ft_ckpts)
            for got, want in zip(run.slices[key], values):
                assert got == pytest.approx(want, rel=1e-5)
        else:
            assert run.slices[key] == (pytest.approx(values, rel=1e-5) if key.startswith("loss") else values)
    # a second prepare reads everything back from the store: same run
    again = P.prepare(setup, run.settings, seed=0, verbose=False)
    assert again.finetune_dir == run.finetune_dir and again.candidates.indices == run.candidates.indices
    info = run.query_info()
    assert list(info["slice"]) == run.query_slice
    assert list(info["n_proponents"]) == [len(run.data.queries[r]["proponents"]) for r in run.query_rows]
    assert list(info["chance_mrr"]) == [chance_mrr(n, p) for n, p in zip(info["n_candidates"], info["n_proponents"])]
    # whole-set BM25: the rank of the first proponent in the top 250 of every abstract
    whole = whole_set_bm25(run.data)
    assert run.whole_set_rr == pytest.approx(whole["reciprocal_ranks"])
    assert list(info["bm25_whole_set_rr"]) == [run.whole_set_rr[r] for r in run.query_rows]


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
    """Against TracIn computed directly, with EOS out of the loss (as FTRACE's code)."""
    run = trex_run
    task = run.setup.task().without_eos()
    queries, cands = run.query_examples(), run.candidate_examples()
    for which in ("ft", "pt"):
        parts = P.stored_tracin_parts(run, which, verbose=False)
        ckpts = run.checkpoints(which)
        assert parts.checkpoints == run.checkpoint_labels(which) and len(ckpts) == 2
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
        # BM25 over the whole attribution set, read at the candidates: rank_bm25's scores
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
    assert rp.tracin_ft.checkpoints == ["25%", "100%"]
    with pytest.raises(ValueError, match="unknown data sets"):
        P.load_runs(setup, "quick", [0], {"lama": {}})
    with pytest.raises(ValueError, match="no seeds"):
        P.load_runs(setup, "quick", [], {"trex": TREX})
    with pytest.raises(ValueError, match="seeds repeat"):
        P.load_runs(setup, "quick", [0, 0], {"trex": TREX})


def test_each_seed_draws_its_own_world(setup):
    s = P.FtraceSettings.for_world("quick", "trex", TREX)
    other = P.seed_setup(setup, s, 1)
    assert other.world_config.seed == 1 and other.world_dir != setup.world_dir
    assert {f.key for f in other.world.facts} != {f.key for f in setup.world.facts}
    assert P.seed_setup(setup, s, 0) is setup
    assert P.seed_setup(setup, P.FtraceSettings.for_world("quick", "trex", {**TREX, "own_world": False}), 1) is setup
