"""A tiny hand-made case whose answer is known: a training set in which exactly one example teaches
the query's fact (shared by the tests of tda.counterfactual and of Part III's pipeline)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tda.checkpoints import list_checkpoints
from tda.models import make_model
from tda.task import CausalLMTask, Examples
from tda.train import TrainConfig, train

CONFIG = TrainConfig(epochs=25, batch_size=4, lr=3e-3, schedule="constant", seed=0)
N_FACTS = 8


@dataclass
class KnownCase:
    task: CausalLMTask
    train: Examples  # N_FACTS cloze examples, each with its own answer word
    query: Examples  # the fact of train[teacher], in the relation's other wording
    teacher: int  # the one training example that states the query's fact
    config: TrainConfig
    run_dir: Path  # the fine-tuning run (epoch-000 = the random initial model)

    @property
    def base(self) -> Path:
        return list_checkpoints(self.run_dir)[0]

    @property
    def final(self) -> Path:
        return list_checkpoints(self.run_dir)[-1]


def cloze(world, fact, template: int) -> tuple[str, str]:
    sentence = world.render(fact, template)
    tail = f" {fact.object} ."
    assert sentence.endswith(tail), sentence
    return sentence[: -len(tail)], fact.object


def known_case(world, tokenizer, folder: Path) -> KnownCase:
    """Facts whose answers (objects) all differ and never occur in another fact's sentence, so the
    query's answer is seen in training only in the teaching example; the query is that fact in the
    relation's other template (never trained on)."""
    chosen, words = [], set()
    for f in world.facts:
        try:
            pairs = [cloze(world, f, t) for t in (0, 1)]
        except AssertionError:
            continue
        sentence_words = set(" ".join(pairs[0]).split())
        if f.object in words or sentence_words & {c.object for c in chosen}:
            continue
        chosen.append(f)
        words |= sentence_words
        if len(chosen) == N_FACTS:
            break
    assert len(chosen) == N_FACTS
    examples = [cloze(world, f, 0) for f in chosen]
    train_ex = Examples([p for p, _ in examples], [t for _, t in examples])
    prompt, target = cloze(world, chosen[0], 1)
    task = CausalLMTask(tokenizer)
    model = make_model("tiny", tokenizer, seed=0)
    train(model, tokenizer, task, train_ex, folder, CONFIG)
    return KnownCase(task=task, train=train_ex, query=Examples([prompt], [target]), teacher=0, config=CONFIG,
                     run_dir=folder)
