"""Part I's experiment plumbing: fine-tuning runs, slices, candidates, decomposed TracIn, metrics.

Tiny worlds and tiny models only; every test checks a property (equality with the engine's own
methods, hand-worked MRRs, errors on bad input), not just that code runs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tda import base
from tda import ftrace_experiments as fx
from tda.data import ftrace as ft
from tda.store import Store

TEST_WORLD = dict(n_people=16, n_cities=6, n_countries=4, n_organisations=3, n_universities=2, n_languages=3,
                  n_currencies=2, n_news=4, n_synth_entities=30)
RELATIONS = ("P19", "P27", "P36")
FAST = dict(size="tiny", pretrain={"epochs": 2}, relations=RELATIONS, epochs=2, lr=5e-3, n_checkpoints=2, k=4,
            m=3, r=3, grad_batch_size=16)
TREX = {**FAST, "n_queries": 12, "known_share": 0.5, "max_learned": None, "max_known": None, "max_other": None}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    store = Store(tmp_path_factory.mktemp("store"))
    return base.world_setup("quick", TEST_WORLD, store=store)


@pytest.fixture(scope="module")
def trex_run(setup):
    return fx.prepare(setup, fx.settings("quick", "trex", TREX), seed=0, verbose=False)


@pytest.fixture(scope="module")
def synth_run(setup):
    s = fx.settings("quick", "synth", {**FAST, "n_queries": 2, "synth_facts": 4})
    return fx.prepare(setup, s, seed=1, verbose=False)


# ---------------------------------------------------------------------------------------------
# settings and checkpoints
# ---------------------------------------------------------------------------------------------
def test_settings_presets_and_errors():
    s = fx.settings("default", "trex", {"epochs": 3})
    assert s.epochs == 3 and s.dataset == "trex"
    assert fx.settings("no-such-preset", "synth") == fx.PRESETS["default"]["synth"]
    with pytest.raises(ValueError, match="unknown FTRACE settings"):
        fx.settings("quick", "trex", {"epoch": 3})
    with pytest.raises(ValueError, match="dataset must be one of"):
        fx.settings("quick", "lama")
    with pytest.raises(ValueError, match="unknown relation ids"):
        fx.settings("quick", "trex", {"relations": ["P19", "P9999"]})
    with pytest.raises(ValueError, match="on_missing"):
        fx.settings("quick", "trex", {"on_missing": "ignore"})


def test_pick_checkpoints():
    paths = [Path(f"epoch-{i:03d}") for i in range(9)]
    assert [p.name for p in fx.pick_checkpoints(paths, 4)] == ["epoch-002", "epoch-004", "epoch-006", "epoch-008"]
    assert [p.name for p in fx.pick_checkpoints(paths, 1)] == ["epoch-008"]
    assert [p.name for p in fx.pick_checkpoints(paths[:3], 4)] == ["epoch-001", "epoch-002"]
    with pytest.raises(ValueError, match="no trained checkpoint"):
        fx.pick_checkpoints(paths[:1], 2)


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
    from tda.train import adam_second_moments, list_checkpoints, read_state
    ckpts = list_checkpoints(run.finetune_dir)
    assert [c.name for c in ckpts] == ["epoch-000", "epoch-001", "epoch-002"]
    assert adam_second_moments(ckpts[-1])
    assert read_state(ckpts[-1])["n_examples"] == len(run.data.abstracts)
    base_final = base.base_checkpoints(setup, "tiny", FAST["pretrain"])[-1]
    from tda.models import load_model
    a, _ = load_model(ckpts[0])
    b, _ = load_model(base_final)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    # the slices are those of the query_slices function at the start and end of fine-tuning
    after, _ = load_model(ckpts[-1])
    direct = ft.query_slices(q, a, after, setup.task())
    for key, values in direct.items():
        assert run.slices[key] == (pytest.approx(values, rel=1e-5) if key.startswith("loss") else values)
    # a second prepare reads everything back from the store: same run
    again = fx.prepare(setup, run.settings, seed=0, verbose=False)
    assert again.finetune_dir == run.finetune_dir and again.candidates.indices == run.candidates.indices
    info = run.query_info()
    assert list(info["slice"]) == run.query_slice
    assert list(info["n_proponents"]) == [len(q[r]["proponents"]) for r in run.query_rows]


def test_seed_changes_queries_and_finetuning(setup, trex_run):
    s = trex_run.settings
    other = fx.build_data(setup.world, s, seed=1)
    assert set(other.queries["uuid"]) != set(trex_run.data.queries["uuid"])
    keys = [fx._finetune_key(setup, s, seed, fx.build_data(setup.world, s, seed)) for seed in (0, 1)]
    assert keys[0]["train"]["seed"] == 0 and keys[1]["train"]["seed"] == 1 and keys[0]["data"] != keys[1]["data"]
    # settings that do not touch the fine-tuning leave its key alone (so the store reuses the run)
    assert fx._finetune_key(setup, fx.settings("quick", "trex", {**TREX, "k": 9}), 0, trex_run.data) == keys[0]
    assert setup.store.path("ftrace-finetune", keys[0]) == trex_run.finetune_dir


def test_query_selection_caps_and_order():
    slices = {"correct_before": [True, False, False, True, False, False],
              "learned": [False, True, True, False, True, False]}
    s = fx.settings("quick", "trex", {"max_learned": 2, "max_known": 1, "max_other": 0})
    rows, names = fx.select_queries(slices, s, seed=0)
    assert len(rows) == 3 and rows == sorted(rows)
    assert names.count("learned") == 2 and names.count("known") == 1
    assert rows == fx.select_queries(slices, s, seed=0)[0]  # seeded
    rows, _ = fx.select_queries(slices, s, seed=0, eligible=[True, False, False, True, True, True])
    assert set(rows) <= {0, 3, 4, 5}


def test_query_without_proponent_is_an_error_or_a_counted_skip(setup, monkeypatch):
    real = fx.build_data

    def drop_one(world, s, seed):
        data = real(world, s, seed)
        q = data.queries.map(lambda r, i: {"proponents": [] if i == 2 else r["proponents"]}, with_indices=True)
        return ft.FtraceData(q, data.abstracts)

    monkeypatch.setattr(fx, "build_data", drop_one)
    s = fx.settings("quick", "trex", {**FAST, "n_queries": 12, "max_learned": None, "max_known": None,
                                      "max_other": None})
    with pytest.raises(ValueError, match="1 of 12 queries have no proponent"):
        fx.prepare(setup, s, seed=0, verbose=False)
    run = fx.prepare(setup, fx.settings("quick", "trex", {**FAST, "n_queries": 12, "max_learned": None,
                                                           "max_known": None, "max_other": None,
                                                           "on_missing": "skip"}), seed=0, verbose=False)
    assert run.candidates.skipped == 1 and run.candidates.skipped_rows == [2] and 2 not in run.query_rows
    assert len(run.query_rows) == 11


# ---------------------------------------------------------------------------------------------
# metrics plumbing
# ---------------------------------------------------------------------------------------------
def _toy_run(trex_run, indices):
    """A run whose first two queries have hand-chosen candidate lists."""
    return fx.Run(setup=trex_run.setup, settings=trex_run.settings, seed=0, data=trex_run.data,
                  finetune_dir=trex_run.finetune_dir, base_dir=trex_run.base_dir, slices=trex_run.slices,
                  query_rows=trex_run.query_rows[:2], query_slice=trex_run.query_slice[:2],
                  candidates=ft.Candidates(query_rows=trex_run.query_rows[:2], indices=indices))


def test_hand_worked_mrr_precision_recall(trex_run):
    q = trex_run.data.queries
    p0, p1 = q[trex_run.query_rows[0]]["proponents"], q[trex_run.query_rows[1]]["proponents"]
    others = [i for i in range(len(trex_run.data.abstracts)) if i not in set(p0) | set(p1)][:12]
    # query 0: 12 non-proponents then its proponents; query 1: its proponents, then others
    # (issue 11: proponents per query now vary, so the hand counts use len(p0), len(p1))
    run = _toy_run(trex_run, [others + list(p0), list(p1) + others[:4]])
    s0 = np.r_[np.arange(12, 0, -1) + 10.0, np.linspace(9, 1, len(p0))]  # first proponent ranked 13th
    s1 = np.r_[[1.0], np.linspace(0.5, 0.2, len(p1) - 1), [0.95, 0.1, 0.05, 0.0]]  # a proponent 1st, a stranger 2nd
    m = fx.evaluate(run, [s0, s1])
    assert m.loc[0, "mrr"] == pytest.approx(1 / 13)
    assert m.loc[0, "precision@10"] == 0.0 and m.loc[0, "recall@10"] == 0.0
    assert m.loc[1, "mrr"] == 1.0
    in_top10 = min(len(p1), 9)  # the stranger takes one of the ten places
    assert m.loc[1, "precision@10"] == pytest.approx(in_top10 / 10)
    assert m.loc[1, "recall@10"] == pytest.approx(in_top10 / len(p1))
    # ties are pessimistic: a constant score puts every proponent after every stranger
    flat = fx.evaluate(run, [np.zeros(12 + len(p0)), np.zeros(len(p1) + 4)])
    assert flat.loc[0, "mrr"] == pytest.approx(1 / 13) and flat.loc[1, "mrr"] == pytest.approx(1 / 5)


def test_an_oracle_gets_mrr_one_and_a_broken_candidate_set_is_refused(trex_run):
    run = trex_run
    props = run.data.queries["proponents"]
    oracle = [np.asarray([1.0 if c in set(props[row]) else 0.0 for c in cands])
              for row, cands in zip(run.query_rows, run.candidates.indices)]
    m = fx.evaluate(run, oracle)
    assert (m["mrr"] == 1.0).all()
    assert np.allclose(m["recall@10"], [min(len(props[r]), 10) / len(props[r]) for r in run.query_rows])
    assert np.allclose(m["precision@10"], [min(len(props[r]), 10) / min(10, len(c))
                                           for r, c in zip(run.query_rows, run.candidates.indices)])
    # a candidate set that lost a proponent: an error, never a silently lower MRR
    lost = [list(c) for c in run.candidates.indices]
    lost[0] = [c for c in lost[0] if c != props[run.query_rows[0]][0]]
    broken = _toy_run(run, lost[:2])
    with pytest.raises(ValueError, match="lost 1 of its"):
        fx.evaluate(broken, [np.zeros(len(lost[0])), np.zeros(len(lost[1]))])
    with pytest.raises(ValueError, match=r"\(3,\) scores for \d+ candidates"):
        fx.evaluate(_toy_run(run, run.candidates.indices[:2]), [np.zeros(3), oracle[1]])
    with pytest.raises(ValueError, match="scores for 1 queries"):
        fx.evaluate(run, oracle[:1])
    with pytest.raises(ValueError, match="NaN"):
        fx.evaluate(run, [np.full(len(c), np.nan) for c in run.candidates.indices])


def test_summary_table_is_mean_and_std_over_seed_means():
    import pandas as pd
    rows = []
    for seed, values in ((0, [1.0, 0.5]), (1, [0.0, 0.5]), (2, [0.5, 0.5])):
        for j, v in enumerate(values):
            rows.append({"dataset": "trex", "method": "BM25", "seed": seed, "query": j, "slice": "learned",
                         "mrr": v, "precision@10": v / 2, "recall@10": v})
    t = fx.summary_table(pd.DataFrame(rows))
    assert t.loc[0, "mrr"] == pytest.approx(np.mean([0.75, 0.25, 0.5]))
    assert t.loc[0, "mrr_std"] == pytest.approx(np.std([0.75, 0.25, 0.5], ddof=1))
    assert t.loc[0, "seeds"] == 3 and t.loc[0, "queries"] == 2
    assert fx.fmt(0.4856, 0.044) == "48.6 ± 4.4"


# ---------------------------------------------------------------------------------------------
# methods: each decomposed score equals the engine's method computed directly
# ---------------------------------------------------------------------------------------------
def test_tracin_parts_equal_the_engines_tracin(trex_run):
    from tda.methods import tracin

    run = trex_run
    task = run.setup.task()
    queries, cands = run.query_examples(), run.candidate_examples()
    for which in ("ft", "pt"):
        parts = fx.tracin_parts(run, which, verbose=False)
        ckpts = run.checkpoints(which)
        assert parts.checkpoints == [c.name for c in ckpts] and len(ckpts) == 2
        assert parts.units == ["embedding", "block.0", "block.1", "head", "other"]
        cases = [("all", "all", "cosine", True)]
        if which == "ft":
            cases += [("all", "all", "dot", False), ("embedding", "embedding", "cosine", True),
                      (["block.1", "head"], ["block.1", "head"], "dot", True)]
        for group, units, similarity, corrected in cases:
            want = tracin(ckpts, task, queries, cands, group=group, similarity=similarity, correction=corrected)
            got = fx.tracin_scores(run, parts, units=units, similarity=similarity, corrected=corrected)
            for a, b in zip(got, run.from_matrix(want)):
                np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-6 * max(1.0, np.abs(b).max()))
        # a single checkpoint is TracIn over that checkpoint alone
        one = tracin(ckpts[:1], task, queries, cands, similarity="cosine", correction=True)
        got = fx.tracin_scores(run, parts, checkpoints=[0], similarity="cosine", corrected=True)
        np.testing.assert_allclose(np.concatenate(got), np.concatenate(run.from_matrix(one)), rtol=2e-4, atol=1e-6)
    # the query gradient norms are those of the parts
    norms = parts.query_norms("all")
    assert norms.shape == (2, len(run.query_rows)) and (norms > 0).all()
    with pytest.raises(ValueError, match="unknown parameter units"):
        parts.pair_scores(units="block.7")


def test_embed_bm25_and_baselines_equal_the_engine(trex_run, synth_run):
    from tda.methods import bm25, embed

    for run in (trex_run, synth_run):
        task = run.setup.task()
        parts = fx.embed_parts(run, verbose=False)
        assert parts.n_layers == 3
        for layers in (0, [2], [0, 1]):
            for pooling in ("tokens", "target"):
                want = embed(run.final_model_dir(), task, run.query_examples(), run.candidate_examples(), layers,
                             pooling=pooling)
                got = fx.embed_scores(run, parts, layers, pooling)
                np.testing.assert_allclose(np.concatenate(got), np.concatenate(run.from_matrix(want)), atol=1e-9)
        with pytest.raises(ValueError, match="do not exist"):
            parts.pair_scores(5)
        # BM25 over the whole attribution set, read at the candidates
        q = run.data.queries.select(run.query_rows)
        full = bm25([ft.filled_text(i, t) for i, t in zip(q["inputs_pretokenized"], q["targets_pretokenized"])],
                    [ft.filled_text(i, t) for i, t in zip(run.data.abstracts["inputs_pretokenized"],
                                                          run.data.abstracts["targets_pretokenized"])])
        for j, (got, cands) in enumerate(zip(fx.bm25_scores(run), run.candidates.indices)):
            np.testing.assert_allclose(got, full[j, cands])


def test_random_target_puts_same_answer_candidates_first(trex_run, synth_run):
    for run in (trex_run, synth_run):
        q = run.data.queries.select(run.query_rows)
        a = run.data.abstracts
        for j, sc in enumerate(fx.random_target_scores(run)):
            answer = ft.answer_text(q[j]["inputs_pretokenized"], q[j]["targets_pretokenized"]).lower()
            same = np.asarray([answer in [x.lower() for x in ft.answers(a[c]["inputs_pretokenized"],
                                                                         a[c]["targets_pretokenized"])]
                               for c in run.candidates.indices[j]])
            if same.any() and (~same).any():
                assert sc[same].min() > sc[~same].max()
        u = fx.uniform_scores(run)
        assert all(((x >= 0) & (x < 1)).all() for x in u)
        assert all(np.array_equal(x, y) for x, y in zip(u, fx.uniform_scores(run)))  # seeded


def test_combine_scores_is_the_mean():
    a = [np.array([1.0, 0.0]), np.array([0.5])]
    b = [np.array([0.0, 1.0]), np.array([0.5])]
    out = fx.combine_scores(a, b)
    assert np.allclose(out[0], [0.5, 0.5]) and np.allclose(out[1], [0.5])
    with pytest.raises(ValueError):
        fx.combine_scores()


def test_verdict_helpers():
    assert fx.beats(0.7, 0.6, 0.02) and not fx.beats(0.61, 0.6, 0.02)
    assert fx.verdict_from([True, True]) == "replicated"
    assert fx.verdict_from([True, False]) == "partly"
    assert fx.verdict_from([False, False]) == "not replicated"


# ---------------------------------------------------------------------------------------------
# score sets of the chapters, and the comparisons behind the verdicts
# ---------------------------------------------------------------------------------------------
def test_score_sets_agree_with_each_other(setup, trex_run, synth_run):
    runs = fx.load_runs(setup, "quick", [0], {"trex": TREX}, datasets=["trex"], verbose=False)
    (rp,) = runs
    assert rp.run.finetune_dir == trex_run.finetune_dir  # from the store
    main = fx.method_scores(rp)
    assert set(main) == set(fx.MAIN_METHODS + fx.VARIANT_METHODS)
    layers = fx.layer_scores(rp)
    ckpts = fx.checkpoint_scores(rp)
    same = lambda a, b: all(np.allclose(x, y) for x, y in zip(a, b))
    assert same(main["TracIn"], layers["TracIn | embedding"])
    assert same(main["TracIn (all parameters)"], layers["TracIn | all"])
    assert same(main["EMBED"], layers["EMBED | layer 0"])
    assert same(main["EMBED (last layer)"], layers["EMBED | layer 2"])
    assert same(main["TracIn"], ckpts["ft | embedding | average | cosine | corrected"])
    assert same(main["TracIn (pre-training ckpts)"], ckpts["pt | embedding | average | cosine | corrected"])
    assert same(main["TracIn+EMBED"], fx.combine_scores(main["TracIn"], main["EMBED"]))
    # the mean of the single checkpoints' cosines is the average's
    singles = [ckpts[f"ft | all | {c} | cosine | plain"] for c in rp.tracin_ft.checkpoints]
    assert same(fx.combine_scores(*singles), ckpts["ft | all | average | cosine | plain"])
    per_ckpt = fx.slice_checkpoint_scores(rp)
    assert same(per_ckpt["ft | average"], main["TracIn"]) and same(per_ckpt["pt | average"], main["TracIn (pre-training ckpts)"])
    for c in rp.tracin_ft.checkpoints:
        assert same(per_ckpt[f"ft | {c}"], ckpts[f"ft | embedding | {c} | cosine | corrected"])
    summary = fx.split_names(fx.summary_table(fx.evaluate_runs(runs, fx.checkpoint_scores)),
                             ["which", "units", "checkpoint", "similarity", "correction"])
    ct = fx.checkpoint_table(summary)
    assert list(ct["checkpoints"]) == ["fine-tuning", "pre-training"] and ct.loc[0, "checkpoint 1"].startswith("epoch 1: ")
    table = fx.evaluate_runs(runs)
    assert len(table) == len(main) * len(trex_run.query_rows)
    assert set(table.columns) >= {"method", "mrr", "precision@10", "recall@10", "slice", "loss_before", "seed"}
    counts = fx.slice_counts(runs)
    assert int(counts.loc[0, "learned"]) == sum(trex_run.slices["learned"])
    norms = fx.gradient_norm_table(runs)
    assert len(norms) == len(trex_run.query_rows) * len(rp.tracin_ft.checkpoints) and (norms["grad_norm"] > 0).all()
    with pytest.raises(ValueError, match="unknown data sets"):
        fx.load_runs(setup, "quick", [0], {"lama": {}})


def _long(values_a, values_b, method_a="A", method_b="B", slices=None):
    import pandas as pd
    rows = []
    for j, (x, y) in enumerate(zip(values_a, values_b)):
        for m, v in ((method_a, x), (method_b, y)):
            rows.append({"dataset": "trex", "seed": j % 2, "query": j, "method": m, "mrr": v,
                         "slice": (slices or ["learned"] * len(values_a))[j]})
    return pd.DataFrame(rows)


def test_paired_comparison_rule():
    clear = _long([1.0, 0.5, 1.0, 0.5, 1.0, 0.5], [0.5, 0.25, 0.5, 0.25, 0.5, 0.25])
    c = fx.compare(clear, "A", "B", margin=0.02, dataset="trex")
    d = np.array([0.5, 0.25] * 3)
    assert c["n"] == 6 and c["diff"] == pytest.approx(d.mean())
    assert c["se"] == pytest.approx(d.std(ddof=1) / np.sqrt(6)) and c["beats"]
    assert not fx.compare(clear, "B", "A", dataset="trex")["beats"]
    noisy = _long([1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.5, 0.25])
    assert not fx.compare(noisy, "A", "B")["beats"]  # mean difference 0.0625 but 2 s.e. is larger
    tiny = _long([0.51, 0.51, 0.51], [0.5, 0.5, 0.5])
    assert not fx.compare(tiny, "A", "B", margin=0.02)["beats"]  # consistent but below the margin
    verdict, comps = fx.beats_all(clear, "A", ["B"], dataset="trex")
    assert verdict == "replicated" and comps[0]["beats"]
    with pytest.raises(ValueError, match="no rows for method"):
        fx.compare(clear, "A", "C")
    g = fx.compare_groups([1.0, 0.9, 1.0, 0.8], [0.2, 0.3, 0.1, 0.2])
    assert g["beats"] and g["diff"] == pytest.approx(0.925 - 0.2)
    assert not fx.compare_groups([1.0], [0.0])["beats"]  # too few queries to tell


def test_main_slice_falls_back_to_all_queries():
    df = _long([1.0] * 12, [0.0] * 12, slices=["learned"] * 10 + ["known"] * 2)
    assert fx.main_slice(df, "trex", min_queries=5) == "learned"
    assert fx.main_slice(df, "trex", min_queries=6) is None  # each seed has only 5 learned queries


def test_explain_saturation_follows_the_numbers():
    import pandas as pd
    norms = pd.DataFrame({"dataset": "trex", "checkpoint": ["epoch-002"] * 4 + ["epoch-004"] * 4,
                          "slice": ["known", "known", "learned", "learned"] * 2,
                          "grad_norm": [0.1, 0.3, 0.8, 1.2, 0.01, 0.01, 0.02, 0.02]})
    # medians at the first checkpoint: known 0.2, learned 1.0 -> 5.0 times larger
    worse = fx.compare_groups([0.9, 1.0, 0.95], [0.2, 0.3, 0.25])
    text = fx.explain_saturation(norms, worse)
    assert "median gradient of a known query is 0.2, against 1 " in text and "(5.0 times larger)" in text
    assert "beyond the noise" in text
    noisy = fx.compare_groups([1.0, 0.0, 1.0], [0.5, 0.5, 0.0])  # diff 0.33, s.e. ~0.4
    assert "cannot tell it from noise" in fx.explain_saturation(norms, noisy)
    same = fx.compare_groups([0.5, 0.6, 0.7], [0.6, 0.6, 0.6])
    assert "does as well on them" in fx.explain_saturation(norms, same)
    assert "cannot be compared" in fx.explain_saturation(norms[norms["slice"] == "known"], same)
