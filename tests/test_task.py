"""How a model turns an example into a loss (``tda.task``): layouts, labels, padding, metrics."""

import pytest
import torch

from tda.models import make_model
from tda.task import IGNORE, CausalLMTask, Examples, Seq2SeqTask, exact_match, losses, task_for


def test_examples_are_parallel_lists():
    ex = Examples(["p1", "p2", "p3"], ["t1", "t2", "t3"])
    assert len(ex) == 3 and ex.subset([2, 0]).targets == ["t3", "t1"]
    assert Examples.texts(["a", "b"]).prompts == ["", ""]
    with pytest.raises(ValueError, match="2 prompts but 1 targets"):
        Examples(["a", "b"], ["c"])


def test_causal_layout_is_bos_prompt_target_eos_right_padded(tiny_tokenizer):
    task = CausalLMTask(tiny_tokenizer)
    ids = lambda t: tiny_tokenizer(t, add_special_tokens=False)["input_ids"]
    batch = task.encode(Examples(["England is", ""], ["a country", "China"]))
    row = [tiny_tokenizer.bos_token_id] + ids("England is") + ids("a country") + [tiny_tokenizer.eos_token_id]
    assert batch["input_ids"][0].tolist() == row
    short = [tiny_tokenizer.bos_token_id] + ids("China") + [tiny_tokenizer.eos_token_id]
    assert batch["input_ids"][1, : len(short)].tolist() == short
    assert (batch["input_ids"][1, len(short):] == task.pad_id).all() and (batch["labels"][1, len(short):] == IGNORE).all()
    assert "attention_mask" not in batch  # causal rows need none: padding is on the right
    with pytest.raises(ValueError, match="does not fit max_length"):
        CausalLMTask(tiny_tokenizer, max_length=2).encode(Examples([""], ["England is a country"]))
    with pytest.raises(ValueError, match="empty"):
        task.encode(Examples([], []))


def test_task_for_picks_the_layout(tiny_tokenizer):
    assert type(task_for(make_model("tiny", tiny_tokenizer), tiny_tokenizer)) is CausalLMTask
    assert Seq2SeqTask.is_seq2seq and not CausalLMTask.is_seq2seq


def test_causal_padding_does_not_change_loss(tiny_tokenizer):
    model = make_model("tiny", tiny_tokenizer)
    task = CausalLMTask(tiny_tokenizer)
    ex = Examples(["", "a much longer prompt with more words"], ["England", "China"])
    batched = losses(model, task, ex)
    singles = torch.cat([losses(model, task, ex.subset([i])) for i in range(2)])
    assert torch.allclose(batched, singles, atol=1e-5)


def test_labels_cover_target_and_eos_only(tiny_tokenizer):
    task = CausalLMTask(tiny_tokenizer)
    batch = task.encode(Examples(["x y"], ["England"]))
    labelled = batch["labels"][0][batch["labels"][0] != -100].tolist()
    assert labelled == tiny_tokenizer("England", add_special_tokens=False)["input_ids"] + [tiny_tokenizer.eos_token_id]


def test_exact_match_on_a_memorised_example(tiny_tokenizer):
    torch.manual_seed(0)
    model = make_model("tiny", tiny_tokenizer)
    task = CausalLMTask(tiny_tokenizer)
    ex = Examples(["England is a"], ["country"])
    assert not exact_match(model, task, ex).item()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        opt.zero_grad()
        task.per_example_loss(model, task.encode(ex)).mean().backward()
        opt.step()
    assert exact_match(model, task, ex).item()
