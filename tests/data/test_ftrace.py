"""FTRACE datasets: real-format loader, TREx analogue, SYNTH generator, candidate sets, slices."""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from tda.data import ftrace as ft
from tda.data.world import RELATION_BY_ID, World, cloze_text
from tda.models import UNK, make_model
from tda.task import CausalLMTask
from tests.conftest import DATA_WORLD



@pytest.fixture(scope="module")
def trex(data_world):
    return ft.build_trex(data_world, n_queries=20, known_share=0.4, seed=3)


@pytest.fixture(scope="module")
def synth(data_world):
    return ft.build_synth(data_world, n_facts=30, n_query_facts=5, seed=1)


# ---------------------------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------------------------
def test_parse_facts_and_answers():
    assert ft.parse_facts("P361,Q48,Q771405;P30,Q48,Q771405") == [("P361", "Q48", "Q771405"),
                                                                  ("P30", "Q48", "Q771405")]
    assert ft.parse_facts("") == []
    for bad in ("P1,Q2", "P1,Q2,Q3;", "P1,,Q3", "P1,Q2,Q3,Q4"):
        with pytest.raises(ValueError, match="malformed fact"):
            ft.parse_facts(bad)
    # T5 format (real data), world format, and a two-mask SYNTH pair
    assert ft.answers("Paul Ehrlich used to work in <extra_id_0> .", "<extra_id_0> Frankfurt") == ["Frankfurt"]
    assert ft.filled_text("Paul Ehrlich used to work in <extra_id_0> .", "<extra_id_0> Frankfurt") == \
        "Paul Ehrlich used to work in Frankfurt ."
    assert ft.filled_text("[MASK] was born in Rome .", "Ann Lee") == "Ann Lee was born in Rome ."
    pair = ("entity-3 died in [MASK] . [MASK] lies in 4-entity .", "XII-entity , entity-7")
    assert ft.answers(*pair) == ["XII-entity", "entity-7"]
    assert ft.filled_text(*pair) == "entity-3 died in XII-entity . entity-7 lies in 4-entity ."
    with pytest.raises(ValueError, match="2 masks but 1 answers"):
        ft.answers("[MASK] and [MASK]", "only-one")


# ---------------------------------------------------------------------------------------------
# 1. the real format
# ---------------------------------------------------------------------------------------------
REAL_ABSTRACTS = [
    {"inputs_pretokenized": 'The name Austroasiatic comes from "<extra_id_0>".', "targets_pretokenized":
     "<extra_id_0> South Asia", "page_uri": "Q33199", "masked_uri": "Q771405", "masked_type": "subject",
     "example_uris": "Q33199-1-Q48-Q771405-1", "facts": "P361,Q48,Q771405;P30,Q48,Q771405", "id": 8},
    {"inputs_pretokenized": "Paul Ehrlich worked in <extra_id_0> for years .", "targets_pretokenized":
     "<extra_id_0> Frankfurt", "page_uri": "Q57089", "masked_uri": "Q1794", "masked_type": "object",
     "example_uris": "Q57089-3-Q1794-Q57089-0", "facts": "P937,Q1794,Q57089", "id": 9},
    {"inputs_pretokenized": "<extra_id_0> worked in Frankfurt for years .", "targets_pretokenized":
     "<extra_id_0> Paul Ehrlich", "page_uri": "Q57089", "masked_uri": "Q57089", "masked_type": "subject",
     "example_uris": "Q57089-3-Q1794-Q57089-1", "facts": "P937,Q1794,Q57089", "id": 10},
    {"inputs_pretokenized": "Asia is a continent , <extra_id_0> is part of it .", "targets_pretokenized":
     "<extra_id_0> South Asia", "page_uri": "Q48", "masked_uri": "Q771405", "masked_type": "subject",
     "example_uris": "Q48-0-Q48-Q771405-1", "facts": "P30,Q48,Q771405", "id": 11},
]
REAL_QUERIES = [
    {"inputs_pretokenized": "Paul Ehrlich used to work in <extra_id_0> .", "targets_pretokenized":
     "<extra_id_0> Frankfurt", "uuid": "5b063008-a8ba-4064-9f59-e70102bb8c50", "obj_uri": "Q1794",
     "sub_uri": "Q57089", "predicate_id": "P937", "obj_surface": "Frankfurt", "sub_surface": "Paul Ehrlich"},
    {"inputs_pretokenized": "South Asia is located in <extra_id_0> .", "targets_pretokenized": "<extra_id_0> Asia",
     "uuid": "q-2", "obj_uri": "Q48", "sub_uri": "Q771405", "predicate_id": "P30", "obj_surface": "Asia",
     "sub_surface": "South Asia"},
    {"inputs_pretokenized": "Rome is the capital of <extra_id_0> .", "targets_pretokenized": "<extra_id_0> Italy",
     "uuid": "q-3", "obj_uri": "Q38", "sub_uri": "Q220", "predicate_id": "P1376", "obj_surface": "Italy",
     "sub_surface": "Rome"},
]
REAL_PROPONENTS = [[1, 2], [0, 3], []]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_parquet(path, rows):
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_real_format_round_trip(tmp_path, fmt):
    write = write_parquet if fmt == "parquet" else write_jsonl
    # a stale proponents column in the file must be ignored and recomputed
    queries = [dict(q, proponents=[99]) for q in REAL_QUERIES]
    a = write(tmp_path / f"abstracts.{fmt}", REAL_ABSTRACTS)
    q = write(tmp_path / f"queries.{fmt}", queries)
    data = ft.load_ftrace(abstracts=a, queries=q)
    assert list(data.queries["proponents"]) == REAL_PROPONENTS
    assert list(data.abstracts["id"]) == [8, 9, 10, 11]
    for name in ft.QUERY_FIELDS:
        assert list(data.queries[name]) == [r[name] for r in REAL_QUERIES]
    for name in ft.ABSTRACT_FIELDS:
        assert list(data.abstracts[name]) == [r[name] for r in REAL_ABSTRACTS]
    # the same data from a folder in the Hugging Face layout, abstracts in two shards
    (tmp_path / "hf" / "abstracts").mkdir(parents=True)
    (tmp_path / "hf" / "queries").mkdir()
    write(tmp_path / "hf" / "abstracts" / f"ftrace-train-00000-of-00002.{fmt}", REAL_ABSTRACTS[:3])
    write(tmp_path / "hf" / "abstracts" / f"ftrace-train-00001-of-00002.{fmt}", REAL_ABSTRACTS[3:])
    write(tmp_path / "hf" / "queries" / f"ftrace-train.{fmt}", REAL_QUERIES)
    again = ft.load_ftrace(tmp_path / "hf")
    assert again.queries.to_dict() == data.queries.to_dict()
    assert again.abstracts.to_dict() == data.abstracts.to_dict()


def test_real_format_to_examples(tmp_path):
    data = ft.load_ftrace(abstracts=write_jsonl(tmp_path / "a.jsonl", REAL_ABSTRACTS),
                          queries=write_jsonl(tmp_path / "q.jsonl", REAL_QUERIES))
    ex = ft.to_examples(data.queries)
    assert ex.prompts[0] == "Paul Ehrlich used to work in <extra_id_0> . answer :"
    assert ex.targets[0] == "Frankfurt"
    raw = ft.to_examples(data.queries, seq2seq=True)
    assert raw.prompts[0] == REAL_QUERIES[0]["inputs_pretokenized"]
    assert raw.targets[0] == "<extra_id_0> Frankfurt"
    assert ft.to_examples(data.queries, mask_token="[MASK]").prompts[0] == \
        "Paul Ehrlich used to work in [MASK] . answer :"


def _bad(rows, i, **change):
    rows = [dict(r) for r in rows]
    rows[i].update(change)
    return rows


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
@pytest.mark.parametrize("part,rows,pattern", [
    ("abstracts", _bad(REAL_ABSTRACTS, 2, facts="P937,Q1794"), r"record 2.*field 'facts'.*malformed fact"),
    ("abstracts", _bad(REAL_ABSTRACTS, 1, facts="P1,Q2,Q3;"), r"record 1.*field 'facts'"),
    ("abstracts", [dict(r, id=float(r["id"])) for r in REAL_ABSTRACTS], r"record 0.*field 'id' should be int or str"),
    ("queries", _bad(REAL_QUERIES, 1, predicate_id=None), r"record 1.*field 'predicate_id'"),
])
def test_real_format_errors(tmp_path, fmt, part, rows, pattern):
    write = write_parquet if fmt == "parquet" else write_jsonl
    files = {"abstracts": REAL_ABSTRACTS, "queries": REAL_QUERIES, part: rows}
    paths = {k: write(tmp_path / f"{k}.{fmt}", v) for k, v in files.items()}
    with pytest.raises(ft.FtraceFormatError, match=pattern) as err:
        ft.load_ftrace(**paths)
    assert str(paths[part]) in str(err.value)


def test_real_format_errors_jsonl_specific(tmp_path):
    a = write_jsonl(tmp_path / "abstracts.jsonl", REAL_ABSTRACTS)
    # a record without a field: file, record, line and field named
    rows = [dict(r) for r in REAL_QUERIES]
    del rows[2]["sub_uri"]
    q = write_jsonl(tmp_path / "queries.jsonl", rows)
    with pytest.raises(ft.FtraceFormatError, match=r"queries\.jsonl: record 2 \(line 3\): missing field 'sub_uri'"):
        ft.load_ftrace(abstracts=a, queries=q)
    # a line that is not JSON (after a blank line: record and line numbers differ)
    q.write_text(json.dumps(REAL_QUERIES[0]) + "\n\n{not json\n")
    with pytest.raises(ft.FtraceFormatError, match=r"queries\.jsonl: record 1 \(line 3\): not valid JSON"):
        ft.load_ftrace(abstracts=a, queries=q)
    # a parquet file without a column
    pq.write_table(pa.Table.from_pylist([{k: v for k, v in r.items() if k != "facts"} for r in REAL_ABSTRACTS]),
                   tmp_path / "abstracts.parquet")
    with pytest.raises(ft.FtraceFormatError, match=r"abstracts\.parquet: record 0: missing field 'facts'"):
        ft.load_ftrace(abstracts=tmp_path / "abstracts.parquet", queries=write_jsonl(q, REAL_QUERIES))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ft.load_ftrace(abstracts=tmp_path / "nope.parquet", queries=q)
    with pytest.raises(ValueError, match="give both"):
        ft.load_ftrace(abstracts=a)
    with pytest.raises(FileNotFoundError, match="no FTRACE folder"):
        ft.load_ftrace(tmp_path / "missing")



@pytest.mark.parametrize("other", ["parquet", "json"])
def test_same_part_in_two_formats_is_an_error(tmp_path, other):
    """queries.jsonl beside queries.parquet used to be read as two shards: every record twice."""
    write = {"parquet": write_parquet, "json": write_jsonl}[other]
    write_jsonl(tmp_path / "abstracts.jsonl", REAL_ABSTRACTS)
    write_jsonl(tmp_path / "queries.jsonl", REAL_QUERIES)
    write(tmp_path / f"queries.{other}", REAL_QUERIES)
    with pytest.raises(ft.FtraceFormatError, match="more than one format") as err:
        ft.load_ftrace(tmp_path)
    message = str(err.value)
    assert "queries.jsonl" in message and f"queries.{other}" in message and "keep one" in message
    # the same inside a shard folder (the Hugging Face layout), and for the abstracts
    hf = tmp_path / "hf"
    for part, rows in (("abstracts", REAL_ABSTRACTS), ("queries", REAL_QUERIES)):
        (hf / part).mkdir(parents=True)
        write_jsonl(hf / part / "train-00000.jsonl", rows)
    write(hf / "abstracts" / f"train-00000.{other}", REAL_ABSTRACTS)
    with pytest.raises(ft.FtraceFormatError, match=r"abstracts.*more than one format.*keep one"):
        ft.load_ftrace(hf)
    # a part both as a folder and as a file beside it
    (hf / "abstracts" / f"train-00000.{other}").unlink()
    write_jsonl(hf / "queries.jsonl", REAL_QUERIES)
    with pytest.raises(ft.FtraceFormatError, match=r"both .*queries/.* and .*queries\.jsonl"):
        ft.load_ftrace(hf)
    (hf / "queries.jsonl").unlink()
    assert len(ft.load_ftrace(hf).queries) == len(REAL_QUERIES)
    # files given explicitly: the same file twice, or one file in two formats, is an error too
    q = tmp_path / "queries.jsonl"
    with pytest.raises(ft.FtraceFormatError, match="twice"):
        ft.load_ftrace(abstracts=tmp_path / "abstracts.jsonl", queries=[q, q])
    with pytest.raises(ft.FtraceFormatError, match="more than one format"):
        ft.load_ftrace(abstracts=tmp_path / "abstracts.jsonl", queries=[q, tmp_path / f"queries.{other}"])


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_string_ids_are_accepted(tmp_path, fmt):
    """The hub card of ekinakyurek/ftrace lists ``id`` as a string feature; ints are read too."""
    write = write_parquet if fmt == "parquet" else write_jsonl
    rows = [dict(r, id=f"a{r['id']}") for r in REAL_ABSTRACTS]
    data = ft.load_ftrace(abstracts=write(tmp_path / f"abstracts.{fmt}", rows),
                          queries=write(tmp_path / f"queries.{fmt}", REAL_QUERIES))
    assert list(data.abstracts["id"]) == ["a8", "a9", "a10", "a11"]
    assert list(data.queries["proponents"]) == REAL_PROPONENTS
    # candidate sets and examples do not care about the id's type
    cands = ft.candidate_sets(*data, k=2, m=1, r=1, seed=0, on_missing="skip")
    assert len(cands) == 2 and cands.labels(data.queries) == \
        ft.candidate_sets(*ft.load_ftrace(abstracts=write(tmp_path / f"a2.{fmt}", REAL_ABSTRACTS),
                                          queries=tmp_path / f"queries.{fmt}"),
                          k=2, m=1, r=1, seed=0, on_missing="skip").labels(data.queries)
    mixed = [dict(r) for r in REAL_ABSTRACTS]
    mixed[2]["id"] = "ten"
    a = write_jsonl(tmp_path / "mixed.jsonl", mixed)
    with pytest.raises(ft.FtraceFormatError, match=r"mixed\.jsonl: record 2 \(line 3\): field 'id'.*one type"):
        ft.load_ftrace(abstracts=a, queries=write_jsonl(tmp_path / "q.jsonl", REAL_QUERIES))


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_empty_file_is_an_error(tmp_path, fmt):
    a = write_jsonl(tmp_path / "abstracts.jsonl", REAL_ABSTRACTS)
    q = tmp_path / f"queries.{fmt}"
    if fmt == "jsonl":
        q.write_text("\n")
    else:
        pq.write_table(pa.Table.from_pylist(REAL_QUERIES).slice(0, 0), q)
    with pytest.raises(ft.FtraceFormatError, match=rf"queries\.{fmt}: no records"):
        ft.load_ftrace(abstracts=a, queries=q)


# ---------------------------------------------------------------------------------------------
# 2. the TREx analogue
# ---------------------------------------------------------------------------------------------
def test_trex_never_states_facts_in_the_query_template(data_world, trex):
    filled = [ft.filled_text(i, t) for i, t in zip(trex.abstracts["inputs_pretokenized"],
                                                  trex.abstracts["targets_pretokenized"])]
    template0 = {World.render(f, 0) for f in data_world.facts}
    assert not template0 & set(filled)
    query_texts = {ft.filled_text(i, t) for i, t in zip(trex.queries["inputs_pretokenized"],
                                                       trex.queries["targets_pretokenized"])}
    assert not query_texts & set(filled)
    # every world fact, known or not, is stated by at least one abstract; co-mentions state none
    stated = {ft.fact_key(*f) for facts in trex.abstracts["facts"] for f in ft.parse_facts(facts)}
    assert stated == {f.key for f in data_world.facts}
    assert "" in set(trex.abstracts["facts"])
    with pytest.raises(ValueError, match="template 0 is the query template"):
        ft.build_trex(data_world, n_queries=5, templates=(0, 1))


def test_trex_queries_and_proponents(data_world, trex):
    """Design changed in issue 11 (was: every fact in 6 examples with the queries' own names):
    proponents now come from pages, so their number varies, masked answers are the sentence's
    own surface form (label or alias), and a multi-fact abstract is a proponent of each fact."""
    q, a = trex
    assert list(a["id"]) == list(range(len(a)))
    by_key = {f.key: (f, k) for f, k in zip(data_world.facts, data_world.known)}
    parsed = [{ft.fact_key(*f) for f in ft.parse_facts(x)} for x in a["facts"]]
    for row in q:
        fact, known = by_key[ft.query_key(row)]
        assert (row["inputs_pretokenized"], row["targets_pretokenized"]) == World.cloze(fact, 0, "object")
        assert row["known"] == known
        assert row["sub_surface"] == fact.subject and row["obj_surface"] == fact.object
        assert row["proponents"] == [i for i, f in enumerate(parsed) if fact.key in f]
        assert len(row["proponents"]) >= 1
    for row in a:
        # the answer is the sentence's own wording of the masked entity: its label or an alias
        assert row["targets_pretokenized"] in data_world.names(row["masked_uri"])
        assert row["masked_type"] in ("subject", "object")
    assert any(len(f) > 1 for f in parsed)  # multi-fact sentences exist ...
    multi = next(i for i, f in enumerate(parsed) if len(f) > 1)
    every = ft.build_trex(data_world, n_queries=None, known_share=None, seed=3)
    keys = set(parsed[multi])
    for row in every.queries:  # ... and are proponents of each of their facts
        assert (ft.query_key(row) in keys) == any(
            every.abstracts[i]["inputs_pretokenized"] == a[multi]["inputs_pretokenized"] for i in row["proponents"])
    assert any(t != u for t, u in zip(a["targets_pretokenized"], a["masked_uri"]))  # aliases are used
    assert sum(q["known"]) == 8  # round(20 * 0.4)
    assert len(set(q["uuid"])) == len(q)
    # the causal format is the world's cloze_text, which pre-training used
    ex = ft.to_examples(q)
    for p, t, row in zip(ex.prompts, ex.targets, q):
        assert f"{p} {t}" == cloze_text(row["inputs_pretokenized"], row["targets_pretokenized"])


def test_trex_pronoun_subjects_have_no_subject_masked_example(data_world):
    from tda.data.pages import PageStyle
    every = ft.build_trex(data_world, n_queries=None, known_share=None, style=PageStyle(pronoun_rate=1.0))
    a = every.abstracts
    pronoun_rows = [i for i, x in enumerate(a["inputs_pretokenized"]) if x.split()[0] in ("He", "She", "It")]
    assert pronoun_rows
    for i in pronoun_rows:
        assert a[i]["masked_type"] == "object" or a[i]["facts"] == ""
        assert a[i]["masked_uri"] != a[i]["page_uri"]
    none = ft.build_trex(data_world, n_queries=None, known_share=None, style=PageStyle(pronoun_rate=0.0))
    assert not any(x.split()[0] in ("He", "She", "It") for x in none.abstracts["inputs_pretokenized"])


def test_trex_options_and_errors(data_world):
    from tda.data.pages import PageStyle
    some = ft.build_trex(data_world, n_queries=4, known_share=None, relations=["P19", "P20"], seed=0)
    assert set(some.queries["predicate_id"]) <= {"P19", "P20"}
    with pytest.raises(ValueError, match="unknown relation ids"):
        ft.build_trex(data_world, n_queries=4, relations=["P999"])
    with pytest.raises(ValueError, match="need"):
        ft.build_trex(data_world, n_queries=150, known_share=1.0)
    with pytest.raises(ValueError, match="alias_rate must be a probability"):
        ft.build_trex(data_world, n_queries=4, style=PageStyle(alias_rate=1.5))
    with pytest.raises(ValueError, match="templates must be"):
        ft.build_trex(data_world, n_queries=4, templates=(1, 7))


# ---------------------------------------------------------------------------------------------
# 3. SYNTH
# ---------------------------------------------------------------------------------------------
def _utterance_guids(example_uris: str) -> list[str]:
    return [re.sub(r"-s[01]$", "", g) for g in example_uris.split(",")]


def test_synth_32_utterances_per_fact(synth):
    q, a = synth
    guids_by_fact: dict[str, set] = defaultdict(set)
    examples_per_guid: Counter = Counter()
    for row in a:
        guids = _utterance_guids(row["example_uris"])
        facts = [f"{g.split('-')[0]},{g.split('-')[2]},{g.split('-')[1]}" for g in guids]
        assert ";".join(facts) == row["facts"]
        assert len(set(facts)) == len(facts)  # a pair never joins two utterances of one fact
        assert row["inputs_pretokenized"].count("[MASK]") == len(guids)
        for g, f in zip(guids, facts):
            guids_by_fact[f].add(g)
            examples_per_guid[g] += 1
    assert len(guids_by_fact) == 30
    query_facts = set(map(ft.query_key, q))
    assert len(query_facts) == 5 and len(q) == 10
    for f, guids in guids_by_fact.items():
        assert len(guids) == (31 if f in query_facts else 32)
    assert sum(1 for n in examples_per_guid.values() if n == 2) <= 1  # at most the odd one out
    assert set(examples_per_guid.values()) <= {2, 4}
    # each held-out utterance is absent from training, and its 31 siblings are its proponents
    texts = [" " + ft.filled_text(i, t) + " " for i, t in zip(a["inputs_pretokenized"], a["targets_pretokenized"])]
    for row in q:
        held = " " + ft.filled_text(row["inputs_pretokenized"], row["targets_pretokenized"]) + " "
        assert not any(held in t for t in texts)
        props = row["proponents"]
        assert len(props) in (122, 124)
        assert props == [i for i, f in enumerate(a["facts"]) if ft.query_key(row) in f.split(";")]
        assert {g for i in props for g in _utterance_guids(a[i]["example_uris"])} >= guids_by_fact[ft.query_key(row)]


def test_synth_rejection_rule_and_entities(data_world, synth):
    facts = {f for s in synth.abstracts["facts"] for f in s.split(";")}
    triples = [f.split(",") for f in facts]
    assert len(triples) == 30
    assert len({(p, s) for p, o, s in triples}) == 30
    assert len({(p, o) for p, o, s in triples}) == 30
    assert all(s != o for p, o, s in triples)
    numbers = [int(x[1:]) for p, o, s in triples for x in (o, s)]
    assert 1 <= min(numbers) and max(numbers) <= DATA_WORLD.n_synth_entities
    big = ft.synth_facts(150, 20, ["P19", "P20", "P27", "P36", "P37", "P30", "P38", "P131", "P159", "P17"], seed=0)
    assert len({(f.relation, f.subject) for f in big}) == 150 == len({(f.relation, f.object) for f in big})
    assert all(f.subject != f.object for f in big)
    with pytest.raises(ValueError, match="n_synth_entities"):
        ft.build_synth(data_world, n_facts=10, n_query_facts=1, n_entities=61)
    with pytest.raises(ValueError, match="at most"):
        ft.synth_facts(11, 5, ["P19", "P20"])
    with pytest.raises(ValueError, match="unknown relation ids"):
        ft.build_synth(data_world, n_facts=10, n_query_facts=1, relations=["P19", "Pxx"])
    with pytest.raises(ValueError, match="n_query_facts"):
        ft.build_synth(data_world, n_facts=10, n_query_facts=11)
    assert ft.synth_surface(14, 0) == "entity-14" and ft.synth_surface(14, 3) == "XIV-entity"


def test_synth_words_are_in_the_vocabulary_and_not_in_pretraining(data_world, data_tokenizer, synth):
    unk = data_tokenizer.convert_tokens_to_ids(UNK)
    texts = []
    for ds in synth:
        ex = ft.to_examples(ds)
        texts += ex.prompts + ex.targets
    every_form = [ft.synth_surface(n, k) for n in range(1, DATA_WORLD.n_synth_entities + 1) for k in range(4)]
    for text in texts + every_form:
        assert unk not in data_tokenizer(text, add_special_tokens=False)["input_ids"], text
    corpus_words = {w for t in data_world.pretraining_corpus() for w in t.split()}
    assert "entity" not in " ".join(corpus_words)
    assert not any(row["known"] for row in synth.queries)


def test_determinism(data_world, trex, synth):
    assert ft.build_trex(data_world, n_queries=20, known_share=0.4, seed=3).queries.to_dict() == trex.queries.to_dict()
    assert ft.build_trex(data_world, n_queries=20, known_share=0.4, seed=3).abstracts.to_dict() == trex.abstracts.to_dict()
    again = ft.build_synth(data_world, n_facts=30, n_query_facts=5, seed=1)
    assert again.queries.to_dict() == synth.queries.to_dict()
    assert again.abstracts.to_dict() == synth.abstracts.to_dict()
    other = ft.build_synth(data_world, n_facts=30, n_query_facts=5, seed=2)
    assert other.abstracts["facts"] != synth.abstracts["facts"]
    c1 = ft.candidate_sets(*trex, k=5, m=3, r=3, seed=7)
    c2 = ft.candidate_sets(*trex, k=5, m=3, r=3, seed=7)
    assert c1.indices == c2.indices


def test_save_and_load_synthetic(tmp_path, synth):
    for fmt in ("parquet", "jsonl"):
        ft.save_ftrace(synth, tmp_path / fmt, fmt=fmt)
        back = ft.load_ftrace(tmp_path / fmt)
        assert back.queries.to_dict() == synth.queries.to_dict()
        assert back.abstracts.to_dict() == synth.abstracts.to_dict()


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


# ---------------------------------------------------------------------------------------------
# 5. slices and losses
# ---------------------------------------------------------------------------------------------
class Oracle(torch.nn.Module):
    """Predicts the next input token (so every teacher-forced target is right) on rows that
    contain ``good`` (None: every row); elsewhere predicts token 0 ([PAD], never a target).
    With ``miss_eos`` the oracle is wrong exactly where the next token is EOS."""

    def __init__(self, vocab: int, good: int | None = None, miss_eos: int | None = None):
        super().__init__()
        self.vocab, self.good, self.miss_eos = vocab, good, miss_eos

    def forward(self, input_ids, **_):
        b, t = input_ids.shape
        logits = torch.zeros(b, t, self.vocab)
        logits[:, :, 0] = 1.0
        nxt = torch.cat([input_ids[:, 1:], input_ids[:, -1:]], 1)
        rows = torch.ones(b, dtype=torch.bool) if self.good is None else (input_ids == self.good).any(1)
        for i in torch.nonzero(rows).flatten():
            logits[i].scatter_(1, nxt[i][:, None], 5.0)
            if self.miss_eos is not None:
                logits[i, nxt[i] == self.miss_eos] = 0.0
                logits[i, nxt[i] == self.miss_eos, 1] = 9.0
        return SimpleNamespace(logits=logits)


def test_query_slices(data_tokenizer, trex):
    q = trex.queries
    task = CausalLMTask(data_tokenizer)
    vocab = len(data_tokenizer)
    ex = ft.to_examples(q)
    # a token that marks some queries (their answer's first token) but not all
    good = data_tokenizer(ex.targets[0], add_special_tokens=False)["input_ids"][0]
    has = [good in data_tokenizer(f"{p} {t}", add_special_tokens=False)["input_ids"] for p, t in zip(ex.prompts, ex.targets)]
    assert 0 < sum(has) < len(q)
    nothing, some, everything = Oracle(vocab, good=-1), Oracle(vocab, good=good), Oracle(vocab)
    s = ft.query_slices(q, nothing, some, task)
    assert s["correct_before"] == [False] * len(q) and s["correct_after"] == has
    assert s["learned"] == has and s["known"] == [False] * len(q)
    s = ft.query_slices(q, some, everything, task)
    assert s["known"] == has and s["learned"] == [not x for x in has]
    assert len(s["loss_before"]) == len(q)
    assert all(la <= lb + 1e-6 for lb, la in zip(s["loss_before"], s["loss_after"]))
    # EOS is not required by default
    no_eos = Oracle(vocab, miss_eos=data_tokenizer.eos_token_id)
    assert ft.answer_correct(no_eos, task, ex) == [True] * len(q)
    assert ft.answer_correct(no_eos, task, ex, include_eos=True) == [False] * len(q)
    # an off-by-one oracle (predicting the current token) is wrong everywhere
    class Copy(Oracle):
        def forward(self, input_ids, **_):
            return SimpleNamespace(logits=torch.nn.functional.one_hot(input_ids, self.vocab).float())
    assert ft.answer_correct(Copy(vocab), task, ex) == [False] * len(q)


def test_synth_queries_are_correct_in_any_writing_of_their_answer(data_tokenizer, synth, trex):
    """A SYNTH query's held-out writing of its answer never occurs in training in its context, so
    any of the entity's four writings counts (queries_correct); TREx answers stay exact."""
    from tda.data.world import roman

    assert ft.acceptable_answers(trex.queries) == [[t] for t in trex.queries["targets_pretokenized"]]
    q = synth.queries
    options = ft.acceptable_answers(q)
    for row, opts in zip(q, options):
        uri = row["obj_uri"] if row["masked_type"] == "object" else row["sub_uri"]
        assert opts[0] == row["targets_pretokenized"] and sorted(opts) == sorted(
            ft.synth_surface(int(uri[1:]), f) for f in range(4))
    # an oracle that can only write the roman form of one query's answer
    task = CausalLMTask(data_tokenizer)
    i = next(i for i, row in enumerate(q) if row["targets_pretokenized"].startswith("entity-")
             and row["targets_pretokenized"][7:].isdigit())
    n = int(q[i]["targets_pretokenized"][7:])
    good = data_tokenizer.convert_tokens_to_ids(roman(n))
    assert good not in data_tokenizer(q[i]["inputs_pretokenized"], add_special_tokens=False)["input_ids"]
    oracle = Oracle(len(data_tokenizer), good=good)
    exact = ft.answer_correct(oracle, task, ft.to_examples(q))
    anyway = ft.queries_correct(oracle, task, q)
    assert not exact[i] and anyway[i]
    assert all(a or not e for a, e in zip(anyway, exact))
    assert ft.query_slices(q, Oracle(len(data_tokenizer), good=-1), oracle, task)["learned"][i]


def test_synth_top_entity_ranks_entities_by_their_best_writing(data_tokenizer, synth, trex):
    from tda.data.world import roman

    task = CausalLMTask(data_tokenizer)
    q = synth.queries
    answer = [o if m == "object" else s for o, s, m in zip(q["obj_uri"], q["sub_uri"], q["masked_type"])]
    i = 0
    n = int(answer[i][1:])
    good = data_tokenizer.convert_tokens_to_ids(roman(n))
    oracle = Oracle(len(data_tokenizer), good=good)  # predicts perfectly only where XII (say) is written
    top = ft.synth_top_entity(oracle, task, q)
    assert top[i]
    # another entity list that leaves the answer out can never rank it first
    others = [u for u in dict.fromkeys(list(q["obj_uri"]) + list(q["sub_uri"])) if u != answer[i]]
    assert not ft.synth_top_entity(oracle, task, q.select([i]), entities=others)[0]
    with pytest.raises(ValueError, match="needs SYNTH queries"):
        ft.synth_top_entity(oracle, task, trex.queries)


def test_query_losses_with_a_real_tiny_model(data_tokenizer, trex):
    model = make_model("tiny", data_tokenizer, seed=0)
    task = CausalLMTask(data_tokenizer)
    losses = ft.query_losses(model, task, trex.queries, batch_size=7)
    assert len(losses) == len(trex.queries) and all(x > 0 for x in losses)
    s = ft.query_slices(trex.queries, model, model, task)
    assert s["learned"] == [False] * len(trex.queries)
    assert s["loss_before"] == pytest.approx(losses, rel=1e-5)


def test_filter_queries(trex):
    q = trex.queries
    some = sorted(set(q["predicate_id"]))[:2]
    kept = ft.filter_queries(q, relations=some)
    assert set(kept["predicate_id"]) == set(some) and len(kept) == sum(p in some for p in q["predicate_id"])
    with pytest.raises(ValueError, match="unknown relation ids"):
        ft.filter_queries(q, relations=["P404"])
    known = ft.filter_queries(q, rows=q["known"])
    assert all(known["known"]) and len(known) == 8


# ---------------------------------------------------------------------------------------------
# 7. summary
# ---------------------------------------------------------------------------------------------
def test_summarize(trex, synth):
    s = ft.summarize(trex, n_examples=2)
    assert s["n_queries"] == 20 and s["n_abstracts"] == len(trex.abstracts)
    assert s["proponents_per_query"] == [len(p) for p in trex.queries["proponents"]]
    assert min(s["proponents_per_query"]) >= 1
    assert s["known_share"] == pytest.approx(0.4)
    assert sum(s["query_relations"].values()) == 20
    assert sum(s["abstract_relations"].values()) == sum(len(ft.parse_facts(f)) for f in trex.abstracts["facts"])
    assert len(s["example_queries"]) == 2
    assert s["example_queries"][0]["proponents"] == f"{len(trex.queries[0]['proponents'])} rows"
    json.dumps(s)  # JSON-able, for the notebook's glue/output file
    s = ft.summarize(synth)
    assert set(s["proponents_per_query"]) <= {122, 124} and s["known_share"] == 0.0
    assert set(s["query_relations"]) <= set(RELATION_BY_ID)


def test_synth_regime_balanced_degrees_and_distinct_pairs(data_world):
    """Issue 11: every entity in 3 +- 1 facts (the paper's ~20 cannot fit our scale) and no two
    facts between one pair of entities, so hard negatives stay a small share of proponents."""
    from tda.data.fidelity import fidelity, synth_names

    data = ft.build_synth(data_world, n_facts=60, n_query_facts=6, seed=2)
    facts = {f for s in data.abstracts["facts"] for f in s.split(";")}
    triples = [f.split(",") for f in facts]
    degree = Counter(x for p, o, s in triples for x in (o, s))
    assert len(degree) == 40  # floor(2 * 60 / 3) entities, all used
    assert min(degree.values()) >= 2 and max(degree.values()) <= 4
    assert len({frozenset((o, s)) for p, o, s in triples}) == len(triples)
    f = fidelity(data, names=synth_names)
    assert f["non_proponents_naming_both"]["mean"] <= 0.15 * f["proponents"]["mean"]
    paper = ft.build_synth(data_world, n_facts=60, n_query_facts=6, seed=2, n_entities=12, balanced=False,
                           distinct_pairs=False)
    assert fidelity(paper, names=synth_names)["non_proponents_naming_both"]["mean"] > f["non_proponents_naming_both"]["mean"]
    with pytest.raises(ValueError, match="entity_facts must be > 0"):
        ft.build_synth(data_world, n_facts=10, n_query_facts=1, entity_facts=0)
    with pytest.raises(ValueError, match="entity-pair"):
        ft.synth_facts(11, 4, ["P19", "P20", "P27", "P36"], distinct_pairs=True)
