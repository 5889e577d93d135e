"""BM25 (``tda.methods.bm25``)."""

import pytest

from tda import methods as M


def test_bm25_ranks_exact_match_first():
    docs = ["Paris is the capital of France .", "Berlin lies in Germany .", "Mara Holt was born in Lusto .",
            "The river Lusto is long ."]
    scores = M.bm25(["Mara Holt was born in Lusto .", "capital of France"], docs)
    assert scores.shape == (2, 4)
    assert scores[0].argmax() == 2 and scores[1].argmax() == 0
    okapi = M.bm25(["Mara Holt was born in Lusto ."], docs, variant="okapi")
    assert okapi[0].argmax() == 2
    assert M.bm25(["BERLIN"], docs)[0].max() == M.bm25(["BERLIN"], docs)[0].min()  # case matters by default
    assert M.bm25(["BERLIN"], docs, lowercase=True)[0].argmax() == 1


@pytest.mark.parametrize("queries,candidates", [([], ["a b"]), (["a"], []), (["a"], ["", " "]), ("a", ["a"])])
def test_bm25_bad_inputs_raise(queries, candidates):
    with pytest.raises((ValueError, TypeError)):
        M.bm25(queries, candidates)
    with pytest.raises(ValueError):
        M.bm25(["a"], ["a"], variant="bm42")
