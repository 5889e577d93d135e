"""Beam search of short answers with a causal LM: the top few continuations of each prompt.

FTRACE's "learned" slice is defined by beam search (its code decodes with beam size 3): a query is
fine-tune-learned when the top beam at the last fine-tuning checkpoint is the answer and the answer
is not among the 3 beams at the first. This module gives those beams for our causal models.

The prompt is encoded exactly as ``tda.task.CausalLMTask.encode`` encodes it (``[BOS] prompt``),
so a beam is what the model would write after the prompt it was trained on. A hypothesis ends when
the model writes EOS (EOS is not part of the returned tokens) or after ``max_new_tokens``; its
score is the sum of its tokens' log-probabilities, EOS included when written (no length penalty:
answers are a few tokens, and a length penalty is a decoding choice the paper does not report).
Hypotheses are expanded in batches, right-padded: a causal model never attends to the padding
after the last real token, so padding cannot change the scores.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch

from .task import CausalLMTask


class Beam(NamedTuple):
    tokens: tuple[int, ...]  # without EOS
    score: float  # summed log-probability
    finished: bool  # ended with EOS


@torch.no_grad()
def beam_search(model, task: CausalLMTask, prompts: Sequence[str], beams: int = 3, max_new_tokens: int = 8,
                batch_size: int = 64) -> list[list[Beam]]:
    """The ``beams`` best continuations of each prompt, best first (see the module docstring).

    ``beams`` and ``max_new_tokens`` must be >= 1; a seq2seq task is refused (our models are causal).
    """
    if getattr(task, "is_seq2seq", False):
        raise ValueError("beam_search decodes causal models only; this task is seq2seq")
    if int(beams) != beams or beams < 1:
        raise ValueError(f"beams must be a positive integer, got {beams!r}")
    if int(max_new_tokens) != max_new_tokens or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
    eos, pad = task.tokenizer.eos_token_id, task.pad_id
    out: list[list[Beam]] = []
    for start in range(0, len(prompts), batch_size):
        chunk = list(prompts[start:start + batch_size])
        prefixes = [task.bos + task.ids(p) for p in chunk]
        pools: list[list[Beam]] = [[Beam((), 0.0, False)] for _ in chunk]
        for _ in range(int(max_new_tokens)):
            live = [(i, b) for i, pool in enumerate(pools) for b in pool if not b.finished]
            if not live:
                break
            rows = [prefixes[i] + list(b.tokens) for i, b in live]
            width = max(len(r) for r in rows)
            ids = torch.full((len(rows), width), pad, dtype=torch.long)
            for r, row in enumerate(rows):
                ids[r, :len(row)] = torch.tensor(row)
            logits = model(input_ids=ids).logits
            last = torch.tensor([len(r) - 1 for r in rows])
            logp = torch.log_softmax(logits[torch.arange(len(rows)), last].double(), -1)
            top = logp.topk(min(int(beams), logp.shape[-1]), dim=-1)
            grown: list[list[Beam]] = [[b for b in pool if b.finished] for pool in pools]
            for r, (i, b) in enumerate(live):
                for lp, tok in zip(top.values[r].tolist(), top.indices[r].tolist()):
                    if tok == eos:
                        grown[i].append(Beam(b.tokens, b.score + lp, True))
                    else:
                        grown[i].append(Beam(b.tokens + (tok,), b.score + lp, False))
            # ties keep the earlier-grown hypothesis (a stable sort), so results are deterministic
            pools = [sorted(g, key=lambda b: -b.score)[:int(beams)] for g in grown]
        out.extend(sorted(pool, key=lambda b: -b.score) for pool in pools)
    return out


def answer_in_beams(model, task: CausalLMTask, prompts: Sequence[str], answers: Sequence[str], beams: int = 3,
                    batch_size: int = 64) -> tuple[list[bool], list[bool]]:
    """(top beam is the answer, the answer is among the ``beams`` beams), per prompt.

    An answer matches a beam when its tokens (``task.ids``) are the beam's tokens exactly; beams
    are searched for up to the answer's length + 1 tokens, enough to write it and stop.
    """
    if len(prompts) != len(answers):
        raise ValueError(f"{len(prompts)} prompts but {len(answers)} answers")
    if not len(prompts):
        return [], []
    targets = [tuple(task.ids(a)) for a in answers]
    found = beam_search(model, task, prompts, beams, max(len(t) for t in targets) + 1, batch_size)
    top1 = [bool(bs) and bs[0].tokens == t for bs, t in zip(found, targets)]
    in_top = [any(b.tokens == t for b in bs) for bs, t in zip(found, targets)]
    return top1, in_top


__all__ = ["Beam", "beam_search", "answer_in_beams"]
