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


def test_untied_embeddings_are_separate_and_survive_a_round_trip(tmp_path, tiny_tokenizer):
    from tda.models import embeddings_tied

    tied, untied = make_model("tiny", tiny_tokenizer, seed=2), make_model("tiny", tiny_tokenizer, seed=2, tie_embeddings=False)
    assert embeddings_tied(tied) and not embeddings_tied(untied)
    assert untied.lm_head.weight is not untied.transformer.wte.weight
    # same starting function: the untied output layer starts as a copy of the input embedding
    ex = Examples(["Ala was born in"], ["England"])
    task = CausalLMTask(tiny_tokenizer)
    assert torch.allclose(losses(tied, task, ex), losses(untied, task, ex))
    assert parameter_count(untied) == parameter_count(tied) + untied.lm_head.weight.numel()
    untied.save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    loaded, _ = load_model(tmp_path)
    assert not embeddings_tied(loaded)
    with torch.no_grad():
        untied.lm_head.weight.add_(1.0)
    assert not torch.equal(untied.lm_head.weight, untied.transformer.wte.weight)


def test_untied_groups_embedding_is_the_input_embedding_only(tiny_tokenizer):
    """'embedding' is wte; with untied weights its gradient touches only the rows of tokens that
    occur in the example (an input embedding's gradient), while the tied matrix also receives the
    output layer's softmax gradient on every row; 'head' holds lm_head only when untied."""
    from tda.gradients import iter_gradients, select_parameters

    tied, untied = make_model("tiny", tiny_tokenizer, seed=2), make_model("tiny", tiny_tokenizer, seed=2, tie_embeddings=False)
    assert select_parameters(untied, "embedding") == ["transformer.wte.weight"]
    assert select_parameters(untied, "head") == ["transformer.ln_f.weight", "transformer.ln_f.bias", "lm_head.weight"]
    assert "lm_head.weight" not in select_parameters(tied, "head")
    assert "lm_head.weight" in select_parameters(untied, "all")
    task = CausalLMTask(tiny_tokenizer)
    ex = Examples(["Ala was born in"], ["England"])
    used = set(task.encode(ex)["input_ids"][0].tolist())
    for model, dense in ((untied, False), (tied, True)):
        _, grads = next(iter_gradients(model, task, ex, "embedding"))
        rows = set(torch.nonzero(grads["transformer.wte.weight"][0].abs().sum(1)).flatten().tolist())
        if dense:
            assert len(rows) == len(tiny_tokenizer)  # the output layer's share reaches every row
        else:
            assert rows <= used and rows


def test_target_eos_false_leaves_eos_out_of_the_loss(tiny_tokenizer):
    """Without EOS, an example's loss is the mean of its answer tokens' negative log-likelihoods,
    computed here by hand from the logits; with EOS (training) the EOS position counts too."""
    model = make_model("tiny", tiny_tokenizer, seed=5)
    task = CausalLMTask(tiny_tokenizer)
    attribution = task.without_eos()
    assert task.target_eos and not attribution.target_eos
    ex = Examples(["Ala was born in", "x"], ["England China", "Wales"])
    batch = task.encode(ex)
    assert torch.equal(batch["input_ids"], attribution.encode(ex)["input_ids"])  # the encoding is unchanged
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=batch["input_ids"]).logits, -1)
    eos = tiny_tokenizer.eos_token_id
    for row, (prompt, target) in enumerate(zip(ex.prompts, ex.targets)):
        p = [tiny_tokenizer.bos_token_id] + tiny_tokenizer(prompt, add_special_tokens=False)["input_ids"]
        t = tiny_tokenizer(target, add_special_tokens=False)["input_ids"]
        nll = [-logp[row, len(p) + i - 1, tok].item() for i, tok in enumerate(t)]
        nll_eos = -logp[row, len(p) + len(t) - 1, eos].item()
        got = losses(model, attribution, ex.subset([row])).item()
        assert got == pytest.approx(sum(nll) / len(nll), rel=1e-5)
        assert losses(model, task, ex.subset([row])).item() == pytest.approx((sum(nll) + nll_eos) / (len(t) + 1), rel=1e-5)
    from tda.task import task_for
    assert not task_for(model, tiny_tokenizer, target_eos=False).target_eos


# ---- load_model: names the model and the reason, at once (issue 14, bad input) ----------------
@pytest.fixture
def hub_down(monkeypatch):
    import tda.models as models_module
    from tda import locations

    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(locations, "hub_unreachable_reason", lambda *a, **k: "huggingface.co:443 cannot be reached")
    monkeypatch.setattr(models_module, "hub_unreachable_reason", lambda *a, **k: "huggingface.co:443 cannot be reached")
    monkeypatch.setattr(models_module, "try_to_load_from_cache", lambda *a, **k: None)


def test_uncached_hub_model_without_network_fails_at_once_naming_it(tmp_path, monkeypatch, hub_down):
    """Before: ``load_model("gpt2")`` offline retried for ~30 s and raised an OSError about a connection."""
    import time

    from tda.locations import SourceNotFoundError

    monkeypatch.chdir(tmp_path)
    start = time.perf_counter()
    with pytest.raises(SourceNotFoundError, match=r"the model 'gpt2' cannot be loaded: it is not a local path .* "
                                                  r"no copy is in the Hugging Face cache, and the hub "
                                                  r"huggingface.co:443 cannot be reached"):
        load_model("gpt2")
    assert time.perf_counter() - start < 2.0


def test_relative_model_path_under_an_existing_folder_is_local(tmp_path, monkeypatch, hub_down):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no model at models/gpt2 .*models/ exists and holds: nothing"):
        load_model("models/gpt2")


def test_offline_mode_names_the_model_and_the_library_reason(monkeypatch):
    from tda.models import ModelLoadError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match=r"cannot load the model 'tda-tests/no-such-model': its configuration "
                                             r"did not load \(OSError: .*\(offline: only the Hugging Face cache"):
        load_model("tda-tests/no-such-model")


def test_model_folder_without_tokenizer_or_with_broken_weights(tmp_path, tiny_tokenizer):
    from tda.models import ModelLoadError

    model = make_model("tiny", tiny_tokenizer)
    model.save_pretrained(tmp_path / "m")
    with pytest.raises(ModelLoadError, match=r"the model '.*m' loaded but its tokenizer did not: no tokenizer files"):
        load_model(tmp_path / "m")
    tiny_tokenizer.save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").write_bytes(b"not weights")
    with pytest.raises(ModelLoadError, match="could not load the model weights from .*m"):
        load_model(tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="its configuration did not load"):
        load_model(tmp_path / "m")
