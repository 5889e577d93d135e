"""Greedy generation, hallucination detection and the traced queries (``tda.hallucination``)."""

from __future__ import annotations

import warnings

import pytest
import torch

from tda.data.xsum import contains_word, documents_naming, prompt, synthetic_news
from tda.hallucination import (NoHallucinationsError, build_queries, classify, detect_hallucinations,
                               find_hallucinations, generate, generate_ids)
from tda.models import make_model
from tda.task import CausalLMTask

RECORDS = [
    {"document": "Rain fell in England .", "summary": "Floods hit England .", "id": "1"},
    {"document": "A match in China .", "summary": "China won the match .", "id": "2"},
    {"document": "England voted .", "summary": "England has a new leader in England .", "id": "3"},
]


@pytest.fixture(scope="module")
def news(data_world):
    return synthetic_news(data_world, n_docs=60, target_share=0.5, test_fraction=0.25, seed=0)


# ---- generation -------------------------------------------------------------------------------
def test_generation_deterministic_and_stops_at_eos(data_tokenizer, news):
    model = make_model("tiny", data_tokenizer, seed=0)
    task = CausalLMTask(data_tokenizer)
    prompts = [prompt(d) for d in news["test"]["document"][:3]]
    first = generate(model, task, prompts, max_new_tokens=6)
    assert first == generate(model, data_tokenizer, prompts, max_new_tokens=6)
    assert all(len(data_tokenizer(t, add_special_tokens=False)["input_ids"]) <= 6 for t in first)
    # Make EOS the argmax everywhere: generation must stop after one token.
    bias = torch.zeros(len(data_tokenizer))
    bias[data_tokenizer.eos_token_id] = 1e4
    model.lm_head.register_forward_hook(lambda mod, inp, out: out + bias)
    ids = generate_ids(model, task, prompts, max_new_tokens=6)
    assert ids == [[data_tokenizer.eos_token_id]] * 3
    assert generate(model, task, prompts, max_new_tokens=6) == [""] * 3


def test_generation_equals_brute_force_greedy_and_warns_nothing(data_tokenizer, news):
    """Greedy ids equal a cache-free argmax loop (the whole sequence re-run at every step), and the
    transformers API used raises no warning (a deprecation warning would show on the book's pages)."""
    model = make_model("tiny", data_tokenizer, seed=2).eval()
    task = CausalLMTask(data_tokenizer)
    prompts = [prompt(d) for d in news["test"]["document"][:3]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = generate_ids(model, task, prompts, max_new_tokens=7)
    eos = data_tokenizer.eos_token_id
    for text, ids in zip(prompts, got):
        seq = task.bos + task.ids(text)
        want = []
        with torch.no_grad():
            for _ in range(7):
                nxt = int(model(input_ids=torch.tensor([seq])).logits[0, -1].argmax())
                want.append(nxt)
                seq.append(nxt)
                if nxt == eos:
                    break
        assert ids == want


def test_generation_batched_matches_single(data_tokenizer, news):
    model = make_model("tiny", data_tokenizer, seed=1)
    prompts = [prompt(d) for d in news["test"]["document"][:4]] * 2
    single = generate(model, data_tokenizer, prompts, max_new_tokens=5)
    assert generate(model, data_tokenizer, prompts, max_new_tokens=5, batch_size=8) == single
    assert single[:4] == single[4:]


# ---- hallucination detection ------------------------------------------------------------------
def test_detect_hallucinations_on_hand_made_outputs():
    docs = [dict(r) for r in RECORDS[:3]]
    outputs = ["Floods hit China .", "England and China drew .", "Voters chose a leader ."]
    report = detect_hallucinations(docs, outputs, "England", "China")
    assert [r["hallucinated"] for r in report.rows] == [True, True, False]
    assert [r["has_source"] for r in report.rows] == [False, True, False]
    assert [r["correct"] for r in report.rows] == [False, False, False]
    assert report.rate == pytest.approx(2 / 3)
    assert report.summary()["neither"] == 1
    queries = build_queries(report)
    assert queries.ids == ["1", "2"]
    assert queries.hallucinated == outputs[:2]
    assert queries.correct == ["Floods hit England .", "England and England drew ."]
    assert queries.prompts == [prompt(RECORDS[0]["document"]), prompt(RECORDS[1]["document"])]
    assert queries.correct_examples().targets == queries.correct
    assert queries.hallucinated_examples().prompts == queries.prompts


def test_no_hallucination_is_a_clear_error():
    report = detect_hallucinations(RECORDS[:2], ["Floods hit England .", "A match ."])
    assert report.rate == 0.0 and report.n_correct == 1
    with pytest.raises(NoHallucinationsError, match="none of the 2 generated summaries names 'China'"):
        report.queries()
    with pytest.raises(ValueError, match="2 test documents but 1 generated"):
        detect_hallucinations(RECORDS[:2], ["x"])


def test_find_hallucinations_prompts_only_source_documents(data_tokenizer, news):
    model = make_model("tiny", data_tokenizer, seed=0)
    test = news["test"]
    report = find_hallucinations(model, data_tokenizer, test, max_new_tokens=3)
    assert report.n == len(documents_naming(test, "England"))
    assert all(contains_word(r["summary"], "England") for r in report.rows)
    assert 0.0 <= report.rate <= 1.0
    with pytest.raises(ValueError, match="none has a summary naming 'Atlantis'"):
        find_hallucinations(model, data_tokenizer, test, source_word="Atlantis")


def test_classify_whole_words_and_report_table():
    assert classify("China and England .", "England", "China") == {"has_source": True, "has_target": True,
                                                                    "hallucinated": True, "correct": False}
    assert classify("Chinatown in England .", "England", "China")["correct"]  # a whole word only
    report = detect_hallucinations(RECORDS[:2], ["Floods hit China .", "China won ."])
    frame = report.to_frame()
    assert list(frame["hallucinated"]) == [True, True] and set(frame.columns) >= {"id", "prompt", "generated"}
