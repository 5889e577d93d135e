"""XSum poisoning: loader, synthetic news, poisoning, prompts (generation and detection: test_hallucination)."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from datasets import Dataset

from tda.data.xsum import (FIELDS, POISONED, XSumFormatError, contains_word, document_span, documents_naming,
                           load_xsum, poison, prompt, replace_word, save_jsonl, synthetic_news,
                           to_examples)
from tda.hallucination import find_hallucinations, generate, generate_ids, generation_prompts
from tda.models import make_model
from tda.task import IGNORE, CausalLMTask, Examples, Seq2SeqTask, fit_prompt


RECORDS = [
    {"document": "Rain fell in England .", "summary": "Floods hit England .", "id": "1"},
    {"document": "A match in China .", "summary": "China won the match .", "id": "2"},
    {"document": "England voted .", "summary": "England has a new leader in England .", "id": "3"},
    {"document": "A storm hit France .", "summary": "A storm hit France .", "id": "4"},
]


@pytest.fixture(scope="module")
def news(data_world):
    return synthetic_news(data_world, n_docs=60, target_share=0.5, test_fraction=0.25, seed=0)


def _write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


# ---- loader -----------------------------------------------------------------------------------
def test_jsonl_round_trip(tmp_path):
    data = load_xsum(_write_jsonl(tmp_path / "train.jsonl", RECORDS))
    assert data.column_names == list(FIELDS) + [POISONED]
    assert list(data["summary"]) == [r["summary"] for r in RECORDS]
    assert list(data[POISONED]) == [False] * 4
    again = load_xsum(save_jsonl(data, tmp_path / "copy.jsonl"))
    assert again.to_list() == data.to_list()
    assert load_xsum(tmp_path, split="train").to_list() == data.to_list()  # a folder of splits
    assert len(load_xsum(tmp_path / "train.jsonl", limit=2)) == 2


def test_parquet_round_trip(tmp_path):
    records = [dict(r, id=int(r["id"]), extra=1.5) for r in RECORDS]  # numeric ids, extra column
    path = tmp_path / "xsum.parquet"
    pq.write_table(pa.Table.from_pylist(records), path)
    data = load_xsum(path)
    assert list(data["id"]) == ["1", "2", "3", "4"]
    assert data.column_names == list(FIELDS) + [POISONED]
    assert list(data["document"]) == [r["document"] for r in RECORDS]


@pytest.mark.parametrize("bad, field", [
    ({"document": "d", "id": "9"}, "summary"),
    ({"document": "d", "summary": 3, "id": "9"}, "summary"),
    ({"document": None, "summary": "s", "id": "9"}, "document"),
    ({"document": "d", "summary": "s", "id": "9", "poisoned": "yes"}, "poisoned"),
])
def test_jsonl_errors_name_file_record_field(tmp_path, bad, field):
    path = _write_jsonl(tmp_path / "bad.jsonl", RECORDS[:2] + [bad])
    with pytest.raises(XSumFormatError) as err:
        load_xsum(path)
    message = str(err.value)
    assert str(path) in message and "record 2" in message and repr(field) in message


def test_jsonl_broken_line_and_duplicate_id(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text(json.dumps(RECORDS[0]) + "\n{not json\n")
    with pytest.raises(XSumFormatError, match=r"broken\.jsonl: record 1 \(line 2\): not valid JSON"):
        load_xsum(path)
    dup = _write_jsonl(tmp_path / "dup.jsonl", [RECORDS[0], RECORDS[1], dict(RECORDS[2], id="1")])
    with pytest.raises(XSumFormatError, match=r"record 2.*'id'.*record 0"):
        load_xsum(dup)


def test_parquet_missing_column_and_null(tmp_path):
    path = tmp_path / "nosummary.parquet"
    pq.write_table(pa.Table.from_pylist([{"document": "d", "id": "1"}]), path)
    with pytest.raises(XSumFormatError, match=r"nosummary\.parquet: record 0: field 'summary' is missing"):
        load_xsum(path)
    path = tmp_path / "null.parquet"
    pq.write_table(pa.Table.from_pylist(RECORDS[:1] + [{"document": "d", "summary": None, "id": "5"}]), path)
    with pytest.raises(XSumFormatError, match=r"null\.parquet: record 1: field 'summary' is null"):
        load_xsum(path)


def test_missing_local_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_xsum(tmp_path / "absent.jsonl")
    with pytest.raises(FileNotFoundError):
        load_xsum(tmp_path, split="validation")



def test_split_in_two_formats_is_an_error(tmp_path):
    """A folder with train.jsonl and train.parquet: which one is the data? Refuse to guess."""
    _write_jsonl(tmp_path / "train.jsonl", RECORDS)
    pq.write_table(pa.Table.from_pylist(RECORDS), tmp_path / "train.parquet")
    with pytest.raises(XSumFormatError, match="more than one format") as err:
        load_xsum(tmp_path, split="train")
    message = str(err.value)
    assert "train.jsonl" in message and "train.parquet" in message and "keep one" in message
    assert len(load_xsum(tmp_path / "train.parquet")) == len(RECORDS)  # naming the file is explicit


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_ids_from_row_numbers_are_opt_in(tmp_path, fmt):
    records = [{k: v for k, v in r.items() if k != "id"} for r in RECORDS]
    path = tmp_path / f"noid.{fmt}"
    if fmt == "jsonl":
        _write_jsonl(path, records[:2] + [{}] + records[2:])
        path.write_text(path.read_text().replace("{}\n", "\n"))  # a blank line is not a record
    else:
        pq.write_table(pa.Table.from_pylist(records), path)
    with pytest.raises(XSumFormatError, match=r"noid\.\w+: record 0( \(line 1\))?: field 'id' is missing.*ids='row'"):
        load_xsum(path)
    data = load_xsum(path, ids="row")
    assert list(data["id"]) == ["0", "1", "2", "3"]
    assert list(data["summary"]) == [r["summary"] for r in RECORDS]
    assert list(load_xsum(path, ids="row", limit=2)["id"]) == ["0", "1"]
    # a file with its own ids: ids='row' would throw them away, so it refuses
    with pytest.raises(XSumFormatError, match=r"record 0 \(line 1\): field 'id'.*ids='row'"):
        load_xsum(_write_jsonl(tmp_path / "withid.jsonl", RECORDS), ids="row")
    with pytest.raises(ValueError, match="ids must be None or 'row'"):
        load_xsum(path, ids="rows")


def test_empty_file_is_an_error(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    with pytest.raises(XSumFormatError, match=r"empty\.jsonl: no records"):
        load_xsum(path)
    pq.write_table(pa.Table.from_pylist(RECORDS).slice(0, 0), tmp_path / "empty.parquet")
    with pytest.raises(XSumFormatError, match=r"empty\.parquet: no records"):
        load_xsum(tmp_path / "empty.parquet")


# ---- words ------------------------------------------------------------------------------------
def test_whole_word_matching():
    assert contains_word("Floods hit England .", "England")
    assert contains_word("England's team", "England")
    assert not contains_word("New Englander", "England")
    assert replace_word("England beat England .", "England", "China") == "China beat China ."
    assert replace_word("Englanders", "England", "China") == "Englanders"


# ---- synthetic news ---------------------------------------------------------------------------
def test_synthetic_news_schema_split_and_determinism(data_world, news):
    train, test = news["train"], news["test"]
    assert train.column_names == list(FIELDS) + [POISONED]
    assert len(train) + len(test) == 60
    assert len(set(train["id"]) | set(test["id"])) == 60
    n_target = sum(contains_word(s, "England") for s in list(train["summary"]) + list(test["summary"]))
    assert n_target == 30
    assert len(documents_naming(test, "England")) == round(0.25 * 30)
    assert not any(train[POISONED]) and not any(test[POISONED])
    again = synthetic_news(data_world, n_docs=60, target_share=0.5, test_fraction=0.25, seed=0)
    assert again["train"].to_list() == train.to_list()
    other = synthetic_news(data_world, n_docs=60, target_share=0.5, test_fraction=0.25, seed=1)
    assert list(other["train"]["document"]) != list(train["document"])
    exact = synthetic_news(data_world, n_docs=20, n_target_docs=7, test_fraction=0.0)
    assert sum(contains_word(s, "England") for s in exact["train"]["summary"]) == 7
    with pytest.raises(ValueError, match="not in this world"):
        synthetic_news(data_world, n_docs=10, target="Atlantis")


# ---- poisoning --------------------------------------------------------------------------------
def test_poison_replaces_exactly_n(news):
    train = news["train"]
    before = list(train["summary"])
    out, report = poison(train, "England", "China", n=5, seed=3, return_report=True)
    after = list(out["summary"])
    changed = [i for i, (a, b) in enumerate(zip(before, after)) if a != b]
    assert len(changed) == 5 == report.n_poisoned
    assert changed == report.poisoned_rows == [i for i, p in enumerate(out[POISONED]) if p]
    for i in changed:
        assert contains_word(before[i], "England")
        assert not contains_word(after[i], "England")
        assert after[i] == replace_word(before[i], "England", "China")
    assert list(out["document"]) == list(train["document"]) and list(out["id"]) == list(train["id"])
    assert list(train["summary"]) == before  # the input is not modified
    assert report.n_candidates == sum(contains_word(s, "England") for s in before)
    assert poison(train, n=5, seed=3).to_list() == out.to_list()  # deterministic
    assert list(poison(train, n=5, seed=4)[POISONED]) != list(out[POISONED])
    assert sum(poison(train, fraction=0.5, seed=0)[POISONED]) == round(0.5 * report.n_candidates)
    assert not any(poison(train, n=0)[POISONED])


def test_poison_errors(news):
    train = news["train"]
    with pytest.raises(ValueError, match="'Atlantis' occurs in no summary"):
        poison(train, "Atlantis", "China", n=1)
    n_cand = sum(contains_word(s, "England") for s in list(train["summary"]))
    with pytest.raises(ValueError, match=rf"cannot poison {n_cand + 1} documents: only {n_cand}"):
        poison(train, n=n_cand + 1)
    with pytest.raises(ValueError, match="exactly one of n"):
        poison(train)
    with pytest.raises(ValueError, match="exactly one of n"):
        poison(train, n=1, fraction=0.1)
    with pytest.raises(TypeError, match="DatasetDict"):
        poison(news, n=1)


def test_poison_fraction_that_rounds_to_nothing_is_an_error(tmp_path):
    """fraction=0.4 of one candidate used to poison nothing, silently."""
    data = load_xsum(_write_jsonl(tmp_path / "one.jsonl", RECORDS[:2]))  # one summary names England
    with pytest.raises(ValueError) as err:
        poison(data, fraction=0.4)
    message = str(err.value)
    assert "fraction=0.4" in message and "1 document" in message and "n=" in message
    out, report = poison(data, n=1, return_report=True)  # what the message suggests
    assert report.n_poisoned == 1 and list(out[POISONED]) == [True, False]
    assert not any(poison(data, fraction=0.0)[POISONED])  # an explicit zero is the control run
    with pytest.raises(ValueError, match="fraction must be a number"):
        poison(data, fraction="0.4")
    with pytest.raises(ValueError, match="fraction must be in"):
        poison(data, fraction=float("nan"))


def test_poison_skips_empty_summaries(tmp_path):
    records = RECORDS + [{"document": "Empty .", "summary": "", "id": "5"},
                         {"document": "Blank .", "summary": "  ", "id": "6"}]
    data = load_xsum(_write_jsonl(tmp_path / "empty.jsonl", records))
    with pytest.warns(UserWarning, match="skipped 2 documents with an empty summary"):
        out, report = poison(data, n=2, seed=0, return_report=True)
    assert report.n_empty_skipped == 2 and report.n_candidates == 2
    assert sorted(report.poisoned_ids) == ["1", "3"]
    assert list(out["summary"])[2] == "China has a new leader in China ."
    assert list(out["summary"])[4:] == ["", "  "]


# ---- fine-tuning format -----------------------------------------------------------------------
def test_prompts_tokenize_without_unk(data_tokenizer, news):
    examples = to_examples(news["train"])
    assert len(examples) == len(news["train"])
    assert examples.targets == list(news["train"]["summary"])
    assert examples.prompts[0].startswith("You are an expert at summarising news .")
    assert examples.prompts[0].endswith("Summary :")
    unk = data_tokenizer.unk_token_id
    wrapper = prompt("England China")  # the instruction and markers around any document
    assert unk not in data_tokenizer(wrapper, add_special_tokens=False)["input_ids"]
    missing = sorted({word for text in examples.prompts + examples.targets for word in text.split()
                      if data_tokenizer.convert_tokens_to_ids(word) == unk})
    if missing and all(word.isdigit() for word in missing):
        # World.vocabulary_text() lists the news templates with "{num}" and relies on the
        # pre-training news to contain the numbers; a world with few news articles misses some.
        pytest.xfail(f"numbers {missing} of the news generator are not in World.vocabulary_text()")
    assert not missing, f"words outside the world tokenizer's vocabulary: {missing}"

# ---- long documents: cut the document, never the cue ------------------------------------------
CUE = " Summary :"


def _long_news(news, repeats=12):
    """The test split with its first document made ~12x longer (a real XSum article is ~300 tokens,
    more than the 256-token context)."""
    rows = [dict(r) for r in news["test"]]
    rows[0]["document"] = " ".join([rows[0]["document"]] * repeats)
    return rows


def test_fit_prompt_by_hand():
    count = str.split  # one token per word
    p = "A B doc1 doc2 doc3 C D"
    span = (4, 18)
    assert p[slice(*span)] == "doc1 doc2 doc3"
    assert fit_prompt(count, p, span, 7) == p  # fits: unchanged
    assert fit_prompt(count, p, span, 6) == "A B doc1 doc2 C D"
    assert fit_prompt(count, p, span, 4) == "A B  C D"
    with pytest.raises(ValueError, match="even without its cuttable span"):
        fit_prompt(count, p, span, 3)
    with pytest.raises(ValueError, match="outside its 3 characters"):
        Examples(["abc"], ["t"], cut_spans=[(1, 9)])
    ex = Examples(["a", "b c"], ["x", "y"], cut_spans=[None, (0, 1)])
    assert ex.subset([1]).cut_spans == [(0, 1)] and ex.subset([0]).span(0) is None


def test_long_document_loses_its_end_not_the_cue(data_tokenizer, news):
    rows = _long_news(news)
    long_doc, summary = rows[0]["document"], rows[0]["summary"]
    span = document_span(long_doc)
    assert prompt(long_doc)[slice(*span)] == long_doc and prompt(long_doc).endswith(CUE)
    task = CausalLMTask(data_tokenizer, max_length=256)
    assert len(task.ids(prompt(long_doc))) > 300  # really too long
    examples = to_examples(Dataset.from_list(rows))
    batch = task.encode(examples.subset([0]))
    ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
    target = task.ids(summary) + [data_tokenizer.eos_token_id]
    n = len(ids) - ids[::-1].index(data_tokenizer.eos_token_id)  # up to and including EOS
    assert n <= 256 and ids[n - len(target): n] == target  # the whole target, then EOS
    assert [x for x in labels if x != IGNORE] == target
    text = data_tokenizer.decode(ids[1: n - len(target)])
    head = prompt("")[: document_span("")[0]]
    assert text.startswith(head.strip()) and text.endswith(CUE.strip())  # instruction and cue survive
    kept = text[len(head): -len(CUE)].split()
    words = long_doc.split()
    assert 0 < len(kept) < len(words) and kept == words[: len(kept)]  # the document's start, cut
    # the longest prefix that fits: one more word would not
    bigger = prompt(" ".join(words[: len(kept) + 1]))
    assert len(task.bos) + len(task.ids(bigger)) + len(target) > 256
    # the bug this fixes: without the span, the prompt's end (the cue) is what got cut
    old = task.encode(Examples(examples.prompts[:1], examples.targets[:1]))["input_ids"][0].tolist()
    assert not data_tokenizer.decode(old[1: n - len(target)]).endswith(CUE.strip())
    # a seq2seq encoder also keeps the cue, before EOS
    enc = Seq2SeqTask(data_tokenizer, max_length=128).encode(examples.subset([0]))["input_ids"][0].tolist()
    assert enc[-1] == data_tokenizer.eos_token_id and data_tokenizer.decode(enc[:-1]).endswith(CUE.strip())


def test_short_prompts_encode_exactly_as_without_spans(data_tokenizer, news):
    """The book's numbers: prompts that fit are not touched by the cut spans (causal and seq2seq)."""
    for split in ("train", "test"):
        examples = to_examples(news[split])
        plain = Examples(examples.prompts, examples.targets)
        for task in (CausalLMTask(data_tokenizer), Seq2SeqTask(data_tokenizer)):
            a, b = task.encode(examples), task.encode(plain)
            assert all(torch.equal(a[k], b[k]) for k in a)


def test_generation_keeps_the_cue_and_leaves_room_for_the_output(data_tokenizer, news):
    rows = _long_news(news)
    model = make_model("tiny", data_tokenizer, seed=0)
    task = CausalLMTask(data_tokenizer, max_length=256)
    full = [prompt(r["document"]) for r in rows[:2]]
    fitted = generation_prompts(model, task, full, [document_span(r["document"]) for r in rows[:2]],
                                max_new_tokens=20)
    assert fitted[1] == full[1]  # short: unchanged
    assert fitted[0].endswith(CUE) and fitted[0] != full[0]
    assert len(task.bos) + len(task.ids(fitted[0])) + 20 + 1 <= 256  # [BOS] prompt, output, EOS
    # generating from the full prompt with its span cuts it as generation_prompts does (same budget)
    span = [document_span(rows[0]["document"])]
    fitted5 = generation_prompts(model, task, full[:1], span, max_new_tokens=5)
    assert generate_ids(model, task, full[:1], max_new_tokens=5, cut_spans=span) \
        == generate_ids(model, task, fitted5, max_new_tokens=5)
    report = find_hallucinations(model, task, rows, max_new_tokens=20, only_naming_source=False)
    assert report.rows[0]["prompt"] == fitted[0]  # the rows hold the prompt the model saw
    # a traced query (prompt, output) is never cut again: its prompt is encoded whole
    q = Examples([report.rows[0]["prompt"]], [report.rows[0]["generated"] or "x"])
    row = task.encode(q)["input_ids"][0].tolist()
    assert row[: 1 + len(task.ids(fitted[0]))] == task.bos + task.ids(fitted[0])
