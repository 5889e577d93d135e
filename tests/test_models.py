import pytest
import torch
from transformers import T5Config, T5ForConditionalGeneration

from tda.models import SIZES, describe_sizes, load_model, make_model, parameter_count, train_tokenizer
from tda.task import CausalLMTask, Examples, Seq2SeqTask, losses


def test_tokenizer_is_deterministic_and_covers_the_world(tiny_world, tiny_tokenizer):
    again = train_tokenizer(tiny_world.pretraining_corpus() + tiny_world.vocabulary_text())
    assert again.get_vocab() == tiny_tokenizer.get_vocab()
    for text in tiny_world.pretraining_corpus():
        assert tiny_tokenizer.unk_token_id not in tiny_tokenizer(text)["input_ids"], text


def test_three_sizes_grow(tiny_tokenizer):
    rows = describe_sizes(tiny_tokenizer)
    assert [r["size"] for r in rows] == list(SIZES)
    counts = [r["parameters"] for r in rows]
    assert len(counts) >= 3 and counts == sorted(counts) and counts[0] < counts[-1] / 10


def test_unknown_size_is_named(tiny_tokenizer):
    with pytest.raises(ValueError, match="unknown model size 'huge'.*tiny"):
        make_model("huge", tiny_tokenizer)


def test_same_seed_same_init(tiny_tokenizer):
    a, b = make_model("tiny", tiny_tokenizer, seed=3), make_model("tiny", tiny_tokenizer, seed=3)
    c = make_model("tiny", tiny_tokenizer, seed=4)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.transformer.wte.weight, c.transformer.wte.weight)


def test_parameter_count_counts_tied_weights_once(tiny_tokenizer):
    m = make_model("tiny", tiny_tokenizer)
    assert m.lm_head.weight is m.transformer.wte.weight
    assert parameter_count(m) == sum(p.numel() for p in m.parameters())  # parameters() dedups too
    assert parameter_count(m) < sum(p.numel() for _, p in m.named_parameters(remove_duplicate=False))


def test_causal_save_load_round_trip(tmp_path, tiny_tokenizer):
    model = make_model("tiny", tiny_tokenizer, seed=1)
    model.save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    loaded, tok = load_model(tmp_path)
    assert tok.get_vocab() == tiny_tokenizer.get_vocab()
    ex = Examples(["Ala was born in"], ["England"])
    task = CausalLMTask(tok)
    assert torch.allclose(losses(model, task, ex), losses(loaded, task, ex))


def test_seq2seq_load_and_task(tmp_path, tiny_tokenizer):
    config = T5Config(vocab_size=len(tiny_tokenizer), d_model=16, d_ff=32, d_kv=8, num_layers=1,
                      num_heads=2, decoder_start_token_id=tiny_tokenizer.pad_token_id,
                      pad_token_id=tiny_tokenizer.pad_token_id, eos_token_id=tiny_tokenizer.eos_token_id)
    torch.manual_seed(0)
    T5ForConditionalGeneration(config).save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    model, tok = load_model(tmp_path)
    assert model.config.is_encoder_decoder
    task = Seq2SeqTask(tok)
    ex = Examples(["a [MASK] b", "c"], ["England", "China China"])
    per_example = losses(model, task, ex)
    # batching and padding must not change any example's loss
    singles = torch.cat([losses(model, task, ex.subset([i])) for i in range(2)])
    assert torch.allclose(per_example, singles, atol=1e-5)


def test_load_model_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_model(tmp_path)
    with pytest.raises(FileNotFoundError, match="no model at"):
        load_model(str(tmp_path / "nope" / "x"))
