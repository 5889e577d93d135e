"""Fixtures of the gradient tests: a tiny GPT-2 and T5, a task, examples of mixed lengths."""

from __future__ import annotations

import pytest
import torch
from transformers import T5Config, T5ForConditionalGeneration

from tda.models import make_model
from tda.task import Examples


@pytest.fixture(scope="module", autouse=True)
def _quiet(monkeypatch_module):
    monkeypatch_module.setenv("TDA_PROGRESS", "0")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is as fast and shares a busy machine better
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


@pytest.fixture(scope="module")
def gpt2(tiny_tokenizer):
    return make_model("tiny", tiny_tokenizer, seed=0)


@pytest.fixture(scope="module")
def examples(tiny_world):
    """Mixed lengths and layouts: plain facts, a cloze with a prompt, a news text."""
    f = tiny_world.facts
    prompt, answer = tiny_world.cloze(f[0])
    return Examples(["", "", prompt + " answer :", ""],
                    [tiny_world.render(f[1]), tiny_world.render(f[2], 3), answer, tiny_world.pretraining_corpus()[0]])


@pytest.fixture(scope="module")
def t5(tiny_tokenizer):
    config = T5Config(vocab_size=len(tiny_tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=1, num_decoder_layers=1,
                      num_heads=4, relative_attention_num_buckets=8, dropout_rate=0.0,
                      decoder_start_token_id=tiny_tokenizer.pad_token_id, pad_token_id=tiny_tokenizer.pad_token_id,
                      eos_token_id=tiny_tokenizer.eos_token_id)
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    return T5ForConditionalGeneration(config).eval()
