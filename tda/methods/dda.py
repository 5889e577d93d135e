"""DDA (Wu et al. 2024): debiased and denoised attribution of a hallucinated output.

With ``IS_theta(z_t, z_e) = grad l(z_e; theta) . grad l(z_t; theta)`` (a gradient dot product, the
test output's loss standing for ``f``):

- denoise: average IS over the epoch checkpoints ``theta_1..theta_N`` (``denoise=False``: the
  last checkpoint only);
- debias: subtract ``beta * IS_theta_0`` at the base model before fine-tuning (``beta=0``: none);
- contrast: score the hallucinated output minus the correct output for the same prompt
  (``contrast=False``: the hallucinated output alone).

``DDA = (1/N) sum_i IS_theta_i - beta IS_theta_0``, then contrasted. ``queries`` hold the test
prompts with the hallucinated outputs as targets; ``correct`` the correct outputs.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..gradients import (Checkpoint, GroupSpec, as_checkpoint_list, check_examples, check_same_architecture,
                         gradient_dots, load_checkpoint_model)
from ..task import CausalLMTask, Examples


def dda(checkpoints, task: CausalLMTask, queries: Examples, candidates: Examples, *,
        base: Checkpoint | None = None, correct: Examples | Sequence[str] | None = None, beta: float = 1.0,
        denoise: bool = True, contrast: bool = True, group: GroupSpec = "all", projection=None, seed: int = 0,
        batch_size: int = 64, method: str = "auto") -> np.ndarray:
    """DDA scores ``[n_queries, n_candidates]`` (higher = more responsible for the hallucination).

    ``checkpoints``: the fine-tuning epoch checkpoints in order (paths or models); ``base``: the
    model before fine-tuning (needed when ``beta != 0``); ``correct``: the correct outputs
    (``Examples`` with the same prompts, or a list of target strings; needed when ``contrast``).
    """
    check_examples(queries, "queries")
    check_examples(candidates, "candidates")
    if not np.isfinite(beta):
        raise ValueError(f"beta must be finite, got {beta}")
    ckpts = as_checkpoint_list(checkpoints)
    used = ckpts if denoise else ckpts[-1:]
    if beta != 0 and base is None:
        raise ValueError("debiasing (beta != 0) needs the base model before fine-tuning: pass base=...")
    check_same_architecture(used + ([base] if beta != 0 else []))

    if contrast:
        if correct is None:
            raise ValueError("the contrastive score needs the correct outputs: pass correct=... "
                             "(or contrast=False)")
        if isinstance(correct, Examples):
            if correct.prompts != queries.prompts:
                raise ValueError("correct outputs must share the hallucinated queries' prompts, in order")
            right = list(correct.targets)
        else:
            right = list(correct)
        if len(right) != len(queries):
            raise ValueError(f"{len(right)} correct outputs for {len(queries)} queries")
        tests = Examples(list(queries.prompts) * 2, list(queries.targets) + right)
    else:
        tests = queries

    def influence(ckpt) -> np.ndarray:
        return gradient_dots(load_checkpoint_model(ckpt), task, tests, candidates, group, projection=projection,
                             seed=seed, batch_size=batch_size, method=method).dots

    score = sum(influence(c) for c in used) / len(used)
    if beta != 0:
        score = score - beta * influence(base)
    if contrast:
        score = score[: len(queries)] - score[len(queries):]
    return score
