"""Model sources: the tiny family with a tokenizer trained on real text, or a real model with its own;
a tokenizer that does not belong to a model is refused."""

from __future__ import annotations

import pytest
from transformers import GPT2Config, GPT2LMHeadModel

from tda.data import ftrace as ft
from tda.data.samples import write_ftrace_sample
from tda.locations import SourceNotFoundError
from tda.model_sources import (ModelSource, ModelSourceError, TokenizerMismatchError, check_tokenizer, save_model,
                               train_text_tokenizer, unk_rate)
from tda.models import make_model


@pytest.fixture(scope="module")
def real_texts(tmp_path_factory):
    data = ft.load_ftrace(write_ftrace_sample(tmp_path_factory.mktemp("mt") / "ftrace"))
    ex = ft.to_examples(data.abstracts)
    return [f"{p} {t}" for p, t in zip(ex.prompts, ex.targets)]


def test_trained_tokenizer_knows_real_text_the_world_one_does_not(real_texts, tiny_tokenizer):
    """The issue's finding, on the sample: the world's tokenizer maps much of real text to [UNK]."""
    own = train_text_tokenizer(real_texts)
    assert unk_rate(own, real_texts) == 0.0
    assert unk_rate(tiny_tokenizer, real_texts) > 0.3
    again = train_text_tokenizer(real_texts)
    assert again.get_vocab() == own.get_vocab()  # deterministic


def test_vocabulary_cap_keeps_the_most_frequent_words(real_texts):
    capped = train_text_tokenizer(real_texts, vocab_size=40)
    assert len(capped) == 40
    assert "the" in capped.get_vocab() and "." in capped.get_vocab()  # frequent words stay
    assert 0.0 < unk_rate(capped, real_texts) < 1.0
    with pytest.raises(ValueError, match="no text"):
        train_text_tokenizer(["  ", ""])
    with pytest.raises(ValueError, match="vocab_size"):
        train_text_tokenizer(real_texts, vocab_size=3)


def _real_like_model(vocab: int, eos: int, bos: int | None = None):
    config = GPT2Config(vocab_size=vocab, n_positions=32, n_embd=8, n_layer=1, n_head=2, eos_token_id=eos,
                        bos_token_id=bos)
    return GPT2LMHeadModel(config)


def test_world_tokenizer_with_a_real_model_is_refused(tmp_path, real_texts, tiny_tokenizer):
    """A real model (own tokenizer saved beside it) handed the world's tokenizer: refused, with how."""
    own = train_text_tokenizer(real_texts)
    folder = save_model(make_model("tiny", own), own, tmp_path / "real")
    source = ModelSource.parse(str(folder))
    assert source.kind == "pretrained" and source.name == str(folder.resolve())
    model, tokenizer = source.load()
    assert tokenizer.get_vocab() == own.get_vocab()
    with pytest.raises(TokenizerMismatchError, match="vocabulary is not the model's own") as err:
        source.load(tokenizer=tiny_tokenizer)
    assert str(folder.resolve()) in str(err.value)
    check_tokenizer(model, own, reference=tokenizer)  # its own tokenizer passes


def test_size_and_special_token_mismatches_are_named(real_texts, tiny_tokenizer):
    n = len(tiny_tokenizer)
    with pytest.raises(TokenizerMismatchError,
                       match=rf"has {n} tokens but the model's input embedding has {n - 5} rows"):
        check_tokenizer(_real_like_model(n - 5, eos=tiny_tokenizer.eos_token_id), tiny_tokenizer)
    with pytest.raises(TokenizerMismatchError, match=r"only .* of the model's 50257 embedding rows"):
        check_tokenizer(_real_like_model(50257, eos=50256), tiny_tokenizer)
    with pytest.raises(TokenizerMismatchError, match=rf"model's EOS is id \[{n - 1}\] .* tokenizer's EOS '\[EOS\]' "
                                                     rf"is id {tiny_tokenizer.eos_token_id}"):
        check_tokenizer(_real_like_model(n, eos=n - 1), tiny_tokenizer)
    with pytest.raises(TokenizerMismatchError, match=r"model's BOS is id \[0\]"):
        check_tokenizer(_real_like_model(n, eos=tiny_tokenizer.eos_token_id, bos=0), tiny_tokenizer)
    check_tokenizer(_real_like_model(n, eos=tiny_tokenizer.eos_token_id, bos=tiny_tokenizer.bos_token_id),
                    tiny_tokenizer)  # a match passes


def test_parse_model_settings(tmp_path):
    assert ModelSource.parse(None) == ModelSource("tiny", "tiny")
    assert ModelSource.parse("small").size == "small"
    assert ModelSource.parse({"source": "tiny", "tie_embeddings": False}).tie_embeddings is False
    hub = ModelSource.parse("Qwen/Qwen2-0.5B")  # a hub name is checked when loaded (it may be cached)
    assert hub.kind == "pretrained" and hub.name == "Qwen/Qwen2-0.5B"
    with pytest.raises(SourceNotFoundError, match="no model at ./models/none"):
        ModelSource.parse("./models/none", base=tmp_path)
    with pytest.raises(ModelSourceError, match=r"unknown field\(s\) \['size'\]"):
        ModelSource.parse({"source": "tiny", "size": "small"})
    with pytest.raises(ModelSourceError, match="unknown tiny model size 'huge'"):
        ModelSource("tiny", size="huge")
    with pytest.raises(ValueError, match="needs texts"):
        ModelSource.parse("tiny").load()


def test_tiny_source_trains_its_tokenizer_on_the_texts(real_texts):
    model, tokenizer = ModelSource.parse({"source": "tiny", "vocab_size": 100}).load(texts=real_texts, seed=1)
    assert len(tokenizer) == 100 and model.get_input_embeddings().weight.shape[0] == 100
    other, _ = ModelSource.parse("tiny").load(tokenizer=tokenizer, seed=1)
    assert all((a == b).all() for a, b in zip(model.parameters(), other.parameters()))  # seeded
