"""The sample files in the real formats: readable by the loaders, deterministic, and fair to BM25."""

from __future__ import annotations

from tda.data import ftrace as ft
from tda.data.samples import COUNTRIES, RELATIONS, ftrace_records, write_ftrace_sample, write_xsum_sample, xsum_records
from tda.data.xsum import contains_word, load_xsum


def test_ftrace_sample_loads_with_four_proponents_per_query(tmp_path):
    data = ft.load_ftrace(write_ftrace_sample(tmp_path / "ftrace"))
    assert len(data.queries) == len(RELATIONS) * len(COUNTRIES) == 60
    assert len(data.abstracts) == 4 * len(data.queries)
    assert all(len(p) == 4 for p in data.queries["proponents"])
    for q in data.queries:  # each proponent holds the answer, masked or in its text
        for j in q["proponents"]:
            assert q["obj_surface"] in ft.filled_text(data.abstracts[j]["inputs_pretokenized"],
                                                      data.abstracts[j]["targets_pretokenized"])
    assert all("<extra_id_0>" in a for a in data.abstracts["inputs_pretokenized"])  # T5 sentinels, as the real data


def test_query_wording_never_occurs_among_the_abstracts():
    """BM25 must not win by matching a query's own template (DESIGN.md's trap)."""
    queries, abstracts = ftrace_records()
    texts = [ft.filled_text(a["inputs_pretokenized"], a["targets_pretokenized"]) for a in abstracts]
    for q in queries:
        filled = ft.filled_text(q["inputs_pretokenized"], q["targets_pretokenized"])
        assert not any(filled.rstrip(" .") in t for t in texts), filled


def test_samples_are_deterministic_and_seeded(tmp_path):
    assert ftrace_records(0) == ftrace_records(0)
    assert [a["inputs_pretokenized"] for a in ftrace_records(0)[1]] != [a["inputs_pretokenized"]
                                                                        for a in ftrace_records(1)[1]]
    assert xsum_records(30, seed=2) == xsum_records(30, seed=2)


def test_xsum_sample_loads_and_names_england(tmp_path):
    news = load_xsum(write_xsum_sample(tmp_path / "news.jsonl", n_docs=50))
    assert len(news) == 50 and len(set(news["id"])) == 50
    naming = sum(contains_word(s, "England") for s in news["summary"])
    assert 10 <= naming <= 35  # about 40% of 50, enough to poison and to prompt with
