"""Beam search of short answers (``tda.decode``): exact against brute force where beams cover the vocabulary."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import pytest
import torch

from tda.decode import answer_in_beams, beam_search
from tda.models import make_model
from tda.task import CausalLMTask, Examples, losses


class Bigram(torch.nn.Module):
    """Next-token logits from a fixed table of the last token (so sequence probabilities are easy to
    enumerate)."""

    def __init__(self, vocab: int, seed: int = 0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.table = torch.randn(vocab, vocab, generator=gen) * 2.0

    def forward(self, input_ids, **_):
        return SimpleNamespace(logits=self.table[input_ids])


class SmallTokenizer:
    """Five tokens: 0 pad, 1 bos, 2 eos, 3 'a', 4 'b'."""

    pad_token_id, bos_token_id, eos_token_id = 0, 1, 2
    words = {"a": 3, "b": 4}

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [self.words[w] for w in text.split()]}

    def __len__(self):
        return 5


def brute_force(model, prefix, eos, vocab, max_new):
    """Every continuation (EOS-terminated, or cut at max_new tokens) with its summed log-probability."""
    out = []
    words = [t for t in range(vocab) if t != eos]
    for n in range(0, max_new + 1):
        for seq in itertools.product(words, repeat=n):
            toks = list(prefix) + list(seq)
            lp = torch.log_softmax(model(torch.tensor([toks + [eos]])).logits[0].double(), -1)
            score = sum(float(lp[len(prefix) - 1 + i, t]) for i, t in enumerate(list(seq) + [eos]))
            if n < max_new:
                out.append((tuple(seq), score))
            else:  # cut: no EOS term
                out.append((tuple(seq), score - float(lp[len(toks) - 1, eos])))
    return sorted(out, key=lambda x: -x[1])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_beams_as_wide_as_the_vocabulary_are_exact(seed):
    tok = SmallTokenizer()
    task = CausalLMTask(tok)
    model = Bigram(5, seed)
    got = beam_search(model, task, ["a", "b a"], beams=5, max_new_tokens=3)
    for prompt, beams in zip(["a", "b a"], got):
        truth = brute_force(model, [1] + tok(prompt)["input_ids"], 2, 5, 3)
        # with as many beams as tokens, no prefix of a top hypothesis is ever pruned
        assert [b.tokens for b in beams] == [t for t, _ in truth[:5]]
        assert [b.score for b in beams] == pytest.approx([s for _, s in truth[:5]])


def test_one_beam_is_greedy_decoding(tiny_tokenizer):
    task = CausalLMTask(tiny_tokenizer)
    model = make_model("tiny", tiny_tokenizer, seed=3)
    prompts = ["The capital of", "[MASK] was born in Zuna . answer :"]
    for prompt, (beam,) in zip(prompts, beam_search(model, task, prompts, beams=1, max_new_tokens=4)):
        ids = task.bos + task.ids(prompt)
        greedy = []
        for _ in range(4):
            nxt = int(model(input_ids=torch.tensor([ids + greedy])).logits[0, -1].argmax())
            if nxt == tiny_tokenizer.eos_token_id:
                break
            greedy.append(nxt)
        assert list(beam.tokens) == greedy


def test_a_finished_beam_scores_its_loss_with_eos(tiny_tokenizer):
    """A beam's score is the log-likelihood the training loss sees: minus the mean target loss
    (EOS included) times the target's length."""
    task = CausalLMTask(tiny_tokenizer)
    model = make_model("tiny", tiny_tokenizer, seed=4)
    beams = beam_search(model, task, ["Zuna is a city in"], beams=3, max_new_tokens=6)[0]
    for b in (b for b in beams if b.finished and b.tokens):
        text = tiny_tokenizer.decode(list(b.tokens))
        assert task.ids(text) == list(b.tokens)
        nll = float(losses(model, task, Examples(["Zuna is a city in"], [text]))[0]) * (len(b.tokens) + 1)
        assert b.score == pytest.approx(-nll, rel=1e-4)


def test_answer_in_beams_finds_a_written_answer():
    tok = SmallTokenizer()
    task = CausalLMTask(tok)

    class Writes(torch.nn.Module):
        """Writes 'b a' then EOS after any prompt, with 'a' as a close second at the first step."""

        def forward(self, input_ids, **_):
            n = input_ids.shape[1]
            logits = torch.full((input_ids.shape[0], n, 5), -9.0)
            last = input_ids[:, -1]
            logits[:, -1, 4] = torch.where(last == 1, 3.0, -9.0)  # after BOS: 'b'
            logits[:, -1, 3] = torch.where(last == 4, 3.0, torch.where(last == 1, 2.5, -9.0))
            logits[:, -1, 2] = torch.where(last == 3, 3.0, -9.0)  # after 'a': EOS
            return SimpleNamespace(logits=logits)

    top1, in_top = answer_in_beams(Writes(), task, ["", ""], ["b a", "a"], beams=3)
    assert top1 == [True, False] and in_top == [True, True]
    assert answer_in_beams(Writes(), task, [""], ["a"], beams=1) == ([False], [False])
    assert answer_in_beams(Writes(), task, [], []) == ([], [])
    with pytest.raises(ValueError, match="2 prompts but 1 answers"):
        answer_in_beams(Writes(), task, ["", ""], ["a"])


@pytest.mark.parametrize("bad", [{"beams": 0}, {"beams": 1.5}, {"max_new_tokens": 0}])
def test_bad_settings_are_refused(bad):
    tok = SmallTokenizer()
    with pytest.raises(ValueError, match="must be a positive integer"):
        beam_search(Bigram(5), CausalLMTask(tok), ["a"], **bad)
