"""Candidate sets (tda.data.candidates)."""

from __future__ import annotations

import numpy as np
import pytest

from tda.data import ftrace as ft


# ---------------------------------------------------------------------------------------------
# 4. candidate sets
# ---------------------------------------------------------------------------------------------
def test_candidate_sets(trex, synth):
    from rank_bm25 import BM25Plus

    for data in (trex, synth):
        q, a = data
        k, m, r = 8, 4, 5
        cands = ft.candidate_sets(q, a, k=k, m=m, r=r, seed=0)
        assert cands.query_rows == list(range(len(q))) and cands.skipped == 0
        bm25 = BM25Plus([ft.filled_text(i, t).split() for i, t in zip(a["inputs_pretokenized"],
                                                                     a["targets_pretokenized"])])
        for row, c in zip(cands.query_rows, cands.indices):
            props = q[row]["proponents"]
            assert set(props) <= set(c)
            assert len(c) == len(set(c))
            assert len(c) <= len(props) + k + m + r
            scores = bm25.get_scores(ft.filled_text(q[row]["inputs_pretokenized"], q[row]["targets_pretokenized"]).split())
            assert int(scores.argmax()) in c
        labels = cands.labels(q)
        assert [sum(x) for x in labels] == [len(p) for p in q["proponents"]]
        ft.check_candidates(cands, q)


def test_candidate_sets_bm25_part_is_rank_bm25_stable_top_k(trex, synth):
    """The sparse index gives exactly rank_bm25's top k, ties by ascending row (the order before
    the switch), also when k exceeds the number of abstracts that share a word with the query."""
    from rank_bm25 import BM25Plus

    for q, a in (trex, synth):
        ref = BM25Plus([ft.bm25_tokens(i, t) for i, t in zip(a["inputs_pretokenized"], a["targets_pretokenized"])])
        for k in (1, 30, len(a) + 5):
            cands = ft.candidate_sets(q, a, k=k, m=0, r=0)
            for row, c in zip(cands.query_rows, cands.indices):
                scores = ref.get_scores(ft.bm25_tokens(q[row]["inputs_pretokenized"], q[row]["targets_pretokenized"]))
                top = np.argsort(-scores, kind="stable")[:k].tolist()
                assert set(c) == set(top) | set(q[row]["proponents"])


def test_candidate_sets_same_answer_and_missing_proponents(trex):
    q, a = trex
    cands = ft.candidate_sets(q, a, k=0, m=1000, r=0)
    answer = q[0]["targets_pretokenized"].lower()
    same = {i for i, t in enumerate(a["targets_pretokenized"]) if t.lower() == answer}
    assert set(cands.indices[0]) == same | set(q[0]["proponents"])
    # a query without proponents: an error by default, a counted skip on request
    lonely = q.map(lambda row, i: {"proponents": [] if i in (1, 4) else row["proponents"]}, with_indices=True)
    with pytest.raises(ValueError, match="2 of 20 queries have no proponent"):
        ft.candidate_sets(lonely, a, k=2, m=2, r=2)
    skipped = ft.candidate_sets(lonely, a, k=2, m=2, r=2, on_missing="skip")
    assert skipped.skipped == 2 and skipped.skipped_rows == [1, 4] and len(skipped) == 18
    with pytest.raises(ValueError, match="do not belong together"):
        ft.candidate_sets(q, a.select(range(10)), k=2, m=2, r=2)
    broken = ft.Candidates(query_rows=[0], indices=[[i for i in cands.indices[0] if i != q[0]["proponents"][0]]])
    with pytest.raises(ValueError, match=f"lost 1 of its {len(q[0]['proponents'])} proponents"):
        ft.check_candidates(broken, q)
