"""Queries as examples, correctness and slices (tda.data.slices)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from tda.data import ftrace as ft
from tda.models import make_model
from tda.task import CausalLMTask


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


class Knows(torch.nn.Module):
    """Writes the answer (then EOS) after the prompts of the queries it knows, PAD after the others."""

    def __init__(self, task, examples, known_rows):
        super().__init__()
        self.vocab = len(task.tokenizer)
        self.eos = task.tokenizer.eos_token_id
        self.answers = {tuple(task.bos + task.ids(examples.prompts[i])): task.ids(examples.targets[i])
                        for i in known_rows}

    def forward(self, input_ids, **_):
        b, t = input_ids.shape
        logits = torch.zeros(b, t, self.vocab)
        logits[:, :, 0] = 5.0
        for r in range(b):
            row = input_ids[r].tolist()
            for prefix, answer in self.answers.items():
                if tuple(row[:len(prefix)]) == prefix:
                    for k, tok in enumerate(answer + [self.eos]):
                        if len(prefix) - 1 + k < t:
                            logits[r, len(prefix) - 1 + k] = 0.0
                            logits[r, len(prefix) - 1 + k, tok] = 5.0
        return SimpleNamespace(logits=logits)


def test_paper_slices_follow_the_papers_learned_definition(data_tokenizer, trex):
    """learned = right at the last checkpoint and not among the top 3 at the first; known = right
    before fine-tuning; correct_at holds every checkpoint's top answer."""
    q = trex.queries.select(range(6))
    task = CausalLMTask(data_tokenizer)
    ex = ft.to_examples(q)
    before, first, last = Knows(task, ex, [0, 1]), Knows(task, ex, [0, 2]), Knows(task, ex, [0, 1, 2, 3])
    s = ft.paper_slices(q, before, [first, last], task)
    assert s["correct_before"] == s["known"] == [True, True, False, False, False, False]
    assert s["correct_at"] == [[True, False, True, False, False, False], [True, True, True, True, False, False]]
    assert s["correct_after"] == s["correct_at"][-1]
    assert s["top_first"] == [True, False, True, False, False, False]
    # query 1 was forgotten at the first checkpoint and relearned: learned, as in the paper's code
    assert s["learned"] == [False, True, False, True, False, False]
    assert len(s["loss_before"]) == len(s["loss_after"]) == 6
    with pytest.raises(ValueError, match="at least one fine-tuning checkpoint"):
        ft.paper_slices(q, before, [], task)


def test_answer_checks_rank_synth_entities(data_tokenizer, synth):
    """SYNTH's checks are entity ranks: top1 is rank 0, in_top rank < beams."""
    from tda.data.world import roman

    task = CausalLMTask(data_tokenizer)
    q = synth.queries
    answer = [o if m == "object" else s for o, s, m in zip(q["obj_uri"], q["sub_uri"], q["masked_type"])]
    good = data_tokenizer.convert_tokens_to_ids(roman(int(answer[0][1:])))
    oracle = Oracle(len(data_tokenizer), good=good)
    ranks = ft.synth_entity_ranks(oracle, task, q)
    checks = ft.answer_checks(oracle, task, q, beams=3)
    assert checks["top1"] == [r == 0 for r in ranks] and checks["in_top"] == [r < 3 for r in ranks]
    assert checks["top1"][0] and ft.is_synth(q)
    assert ft.synth_entity_ranks(oracle, task, q.select([0]), entities=["E999"]) == [1]  # left out: last
