"""DDA (Wu et al. 2024): debiased and denoised attribution of a hallucinated output.

With ``IS_theta(z_t, z_e) = grad l(z_e; theta) . grad l(z_t; theta)`` (a gradient dot product, the
test output's loss standing for ``f``):

- denoise: average IS over the epoch checkpoints ``theta_1..theta_N`` (``denoise=False``: the
  last checkpoint only);
- debias: subtract ``beta * IS_theta_0`` at the base model before fine-tuning (``beta=0``: none);
- contrast: score the hallucinated output minus the correct output for the same prompt
  (``contrast=False``: the hallucinated output alone).

``DDA = (1/N) sum_i IS_theta_i - beta IS_theta_0``, then contrasted.

Two choices the paper leaves open are options [inf]: ``beta_units`` -- ``"raw"`` is the formula
above; ``"normalised"`` measures beta relative to the ratio of the two terms' scales (per query, the
norm over candidates of the denoised term over that of the θ0 term; :func:`debias_terms`), so
that beta = 1 subtracts a term as large as the signal at any model size, where a raw beta means
something else at every size (the two terms' scales change with the model). ``similarity`` --
``"dot"`` (the paper's IS) or ``"cosine"`` (every gradient unit-normalised first, FTRACE's
"unit-normalised" TracIn; the contrast is then a difference of cosines).

Computed in two steps, always the same way: ``influence_dots`` computes the parts — the exact dot
products of each test output's gradient (the hallucinated outputs, then their correct
counterparts) with every candidate's, at ``theta_0`` and at each epoch checkpoint
(:class:`InfluenceDots`) — and ``InfluenceDots.dda`` combines them. Every variant (the ablation's
switches, any ``beta``) is then a linear combination of stored numbers, and so is TracIn of the
hallucinated outputs (``InfluenceDots.tracin``, through ``tda.methods.tracin.combine_checkpoints``).
``dda`` is the two steps in one call.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..checkpoints import Checkpoint, as_checkpoint_list, check_same_architecture, load_checkpoint_model
from ..gradients import GroupSpec, check_examples, gradient_dots
from ..task import CausalLMTask, Examples
from .tracin import combine_checkpoints


def check_beta(beta, where: str = "beta") -> float:
    """``beta`` as a float when it is a real number, finite and >= 0; else an error naming ``where``
    (a setting, or a place in a sweep) and the value. The paper sweeps beta upwards from 0 (no
    debiasing); a negative beta would add the base model's influence instead of removing it."""
    if isinstance(beta, bool) or not isinstance(beta, numbers.Real):
        raise TypeError(f"{where} must be a number, got {type(beta).__name__} {beta!r}")
    value = float(beta)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{where} must be finite and >= 0 (0: no debiasing), got {value:g}")
    return value


BETA_UNITS = ("raw", "normalised")
SIMILARITIES = ("dot", "cosine")


def debias_terms(signal: np.ndarray, bias: np.ndarray, beta: float, units: str = "raw") -> np.ndarray:
    """``signal - beta' * bias`` per query (rows), with ``beta' = beta`` (``units="raw"``, the paper's
    formula) or ``beta' = beta * ||signal_q|| / ||bias_q||`` (``"normalised"``: beta relative to the
    ratio of the two terms' scales over the candidates, so that beta = 1 subtracts a term exactly as
    large as the signal whatever the model size; a query whose bias term is all zero subtracts nothing)."""
    if units not in BETA_UNITS:
        raise ValueError(f"beta units must be one of {BETA_UNITS}, got {units!r}")
    beta = check_beta(beta)
    if beta == 0:
        return signal.copy()
    if units == "raw":
        return signal - beta * bias
    s_norm, b_norm = np.linalg.norm(signal, axis=-1), np.linalg.norm(bias, axis=-1)
    ratio = np.divide(s_norm, b_norm, out=np.zeros_like(s_norm), where=b_norm > 0)
    return signal - (beta * ratio)[..., None] * bias


@dataclass
class InfluenceDots:
    """``dots[i, j, c] = <grad l(test_j; θ_i), grad l(train_c; θ_i)>``, exact.

    ``i = 0`` is the base model θ0 (before fine-tuning; NaN when it was not computed), ``i = 1..N``
    the epoch checkpoints; test rows ``0..Q-1`` are the hallucinated outputs and, when the correct
    counterparts were computed, ``Q..2Q-1`` those (same prompts, target word replaced by the source
    word). ``lr_weights[i-1]`` is the mean learning rate of epoch ``i`` (TracIn's weights).
    ``test_sq[i, j]`` and ``train_sq[i, c]``: the squared gradient norms of each side at each
    checkpoint (None when not kept), for cosine scores and for how fitting changes the gradients.
    """

    dots: np.ndarray
    n_queries: int
    lr_weights: np.ndarray
    test_sq: np.ndarray | None = None
    train_sq: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.dots = np.asarray(self.dots, dtype=np.float64)
        q = self.n_queries
        if self.dots.ndim != 3 or self.dots.shape[1] not in (q, 2 * q) or self.dots.shape[0] < 2:
            raise ValueError(f"dots must be [1 + N checkpoints, 2 x {q} tests (or {q} without correct outputs), "
                             f"candidates], got shape {self.dots.shape}")
        self.lr_weights = np.asarray(self.lr_weights, dtype=np.float64)
        if len(self.lr_weights) != self.dots.shape[0] - 1:
            raise ValueError(f"{len(self.lr_weights)} learning-rate weights for {self.dots.shape[0] - 1} epochs")
        if (self.test_sq is None) != (self.train_sq is None):
            raise ValueError("give both squared-norm arrays (test_sq and train_sq) or neither")
        if self.test_sq is not None:
            self.test_sq = np.asarray(self.test_sq, dtype=np.float64)
            self.train_sq = np.asarray(self.train_sq, dtype=np.float64)
            n, t, c = self.dots.shape
            if self.test_sq.shape != (n, t) or self.train_sq.shape != (n, c):
                raise ValueError(f"squared norms must be [{n}, {t}] (tests) and [{n}, {c}] (candidates), got "
                                 f"{self.test_sq.shape} and {self.train_sq.shape}")

    @property
    def n_epochs(self) -> int:
        return self.dots.shape[0] - 1

    @property
    def has_correct(self) -> bool:
        """Whether the correct counterparts were computed (needed by the contrast)."""
        return self.dots.shape[1] == 2 * self.n_queries

    def _contrast(self, s: np.ndarray, contrast: bool) -> np.ndarray:
        q = self.n_queries
        if not contrast:
            return s[:q].copy()
        if not self.has_correct:
            raise ValueError("the contrastive score needs the correct outputs, which were not computed")
        return s[:q] - s[q:]

    def similarity(self, i: int, similarity: str = "dot") -> np.ndarray:
        """The dots of checkpoint ``i``, or (``"cosine"``) those of unit-normalised gradients (each
        test output's and each candidate's gradient divided by its norm; a zero gradient gives 0)."""
        if similarity not in SIMILARITIES:
            raise ValueError(f"similarity must be one of {SIMILARITIES}, got {similarity!r}")
        if similarity == "dot":
            return self.dots[i]
        if self.test_sq is None:
            raise ValueError("cosine scores need the gradients' norms, which were not kept")
        den = np.sqrt(self.test_sq[i])[:, None] * np.sqrt(self.train_sq[i])[None, :]
        return np.divide(self.dots[i], den, out=np.zeros_like(self.dots[i]), where=den > 0)

    def terms(self, denoise: bool = True, contrast: bool = True, similarity: str = "dot") -> tuple[np.ndarray, np.ndarray]:
        """(signal, bias), each ``[Q, candidates]``: ``C[mean_{i>=1} IS_θi]`` (``C[IS_θN]`` without
        denoise) and ``C[IS_θ0]``, the term debias subtracts (NaN when θ0 was not computed)."""
        n = self.dots.shape[0]
        s = (np.mean([self.similarity(i, similarity) for i in range(1, n)], axis=0) if denoise
             else self.similarity(n - 1, similarity))
        return self._contrast(s, contrast), self._contrast(self.similarity(0, similarity), contrast)

    def term_scales(self, denoise: bool = True, contrast: bool = True, similarity: str = "dot"):
        """Per query, the norms over candidates of the signal and of the θ0 term (:meth:`terms`):
        β times their ratio compares across model sizes where raw β does not."""
        signal, bias = self.terms(denoise, contrast, similarity)
        return np.linalg.norm(signal, axis=1), np.linalg.norm(bias, axis=1)

    def dda(self, beta: float = 1.0, denoise: bool = True, contrast: bool = True, debias: bool = True,
            similarity: str = "dot", beta_units: str = "raw") -> np.ndarray:
        """DDA scores ``[Q, candidates]``; ``debias=False`` is ``beta = 0``; ``beta_units`` see
        :func:`debias_terms`; ``similarity="cosine"`` unit-normalises every gradient first."""
        beta = check_beta(beta)
        signal, bias = self.terms(denoise, contrast, similarity)
        if not debias or beta == 0:
            return signal
        if np.isnan(self.dots[0]).any():
            raise ValueError("debiasing (beta != 0) needs the base model's dots, which were not computed")
        return debias_terms(signal, bias, beta, beta_units)

    def checkpoint(self, i: int, contrast: bool = True, similarity: str = "dot") -> np.ndarray:
        """The influence at one checkpoint alone (``i = 0``: the base model, what debias subtracts)."""
        return self._contrast(self.similarity(i, similarity), contrast)

    def tracin(self, contrast: bool = False, similarity: str = "dot") -> np.ndarray:
        """TracIn of the hallucinated outputs, ``sum_i η_i IS_θi`` over the epoch checkpoints; with
        ``contrast`` the same of hallucinated minus correct (the contrast DDA gets)."""
        return combine_checkpoints([self.checkpoint(i, contrast, similarity) for i in range(1, self.n_epochs + 1)],
                                   self.lr_weights, reduce="sum")

    def train_norms(self, i: int) -> np.ndarray:
        """Gradient norm of every candidate at checkpoint ``i`` (0 = θ0)."""
        if self.train_sq is None:
            raise ValueError("the gradients' norms were not kept")
        return np.sqrt(self.train_sq[i])

    def save(self, folder: Path) -> None:
        np.save(Path(folder) / "dots.npy", self.dots)
        if self.test_sq is not None:
            np.savez(Path(folder) / "norms.npz", test_sq=self.test_sq, train_sq=self.train_sq)
        (Path(folder) / "dots.json").write_text(json.dumps({"n_queries": self.n_queries,
                                                            "lr_weights": self.lr_weights.tolist()}))

    @classmethod
    def load(cls, folder: Path) -> "InfluenceDots":
        meta = json.loads((Path(folder) / "dots.json").read_text())
        norms = Path(folder) / "norms.npz"
        sq = (None, None)
        if norms.is_file():
            with np.load(norms) as z:
                sq = (z["test_sq"], z["train_sq"])
        return cls(np.load(Path(folder) / "dots.npy"), meta["n_queries"], np.asarray(meta["lr_weights"]), *sq)


def influence_dots(base: Checkpoint | None, checkpoints, task: CausalLMTask, hallucinated: Examples,
                   correct: Examples | None, candidates: Examples, *, group: GroupSpec = "all", projection=None,
                   seed: int = 0, batch_size: int = 64, method: str = "auto",
                   lr_weights: Sequence[float] | None = None, work: Path | None = None,
                   verbose: bool = False) -> InfluenceDots:
    """Gradient dots of the test outputs (hallucinated, then correct when given) with every candidate,
    at the base model ``base`` (θ0; None: not computed, NaN) and at each epoch checkpoint.

    With ``work`` each checkpoint's matrix (and both sides' squared gradient norms) is saved as it is done and reused by a resumed call, so an
    interrupted run loses at most one checkpoint. ``lr_weights``: the epochs' mean learning rates
    (default 1 each).
    """
    check_examples(hallucinated, "hallucinated outputs")
    check_examples(candidates, "candidates")
    if correct is not None and (len(hallucinated) != len(correct)
                                or list(hallucinated.prompts) != list(correct.prompts)):
        raise ValueError("correct outputs must pair one to one with the hallucinated ones (same prompts, in order)")
    tests = hallucinated if correct is None else Examples(list(hallucinated.prompts) * 2,
                                                          list(hallucinated.targets) + list(correct.targets))
    epochs = as_checkpoint_list(checkpoints)
    mats, test_sq, train_sq = [], [], []
    for i, ckpt in enumerate([base] + epochs):
        if ckpt is None:
            mats.append(np.full((len(tests), len(candidates)), np.nan))
            test_sq.append(np.full(len(tests), np.nan))
            train_sq.append(np.full(len(candidates), np.nan))
            continue
        part = None if work is None else Path(work) / f"dots-{i:03d}.npz"
        if part is not None and part.is_file():
            with np.load(part) as z:
                mats.append(z["dots"])
                test_sq.append(z["test_sq"])
                train_sq.append(z["train_sq"])
            continue
        t0 = time.perf_counter()
        got = gradient_dots(load_checkpoint_model(ckpt), task, tests, candidates, group, projection=projection,
                            seed=seed, batch_size=batch_size, method=method)
        if part is not None:
            tmp = part.with_name(part.stem + ".tmp.npz")
            np.savez(tmp, dots=got.dots, test_sq=got.query_sq_norms, train_sq=got.candidate_sq_norms)
            os.replace(tmp, part)
        if verbose:
            print(f"    checkpoint {i}/{len(epochs)}: {len(tests)} x {len(candidates)} dots in "
                  f"{time.perf_counter() - t0:.1f} s", flush=True)
        mats.append(got.dots)
        test_sq.append(got.query_sq_norms)
        train_sq.append(got.candidate_sq_norms)
    weights = np.ones(len(epochs)) if lr_weights is None else np.asarray(lr_weights, dtype=np.float64)
    return InfluenceDots(np.stack(mats), len(hallucinated), weights, np.stack(test_sq), np.stack(train_sq))


def dda(checkpoints, task: CausalLMTask, queries: Examples, candidates: Examples, *,
        base: Checkpoint | None = None, correct: Examples | Sequence[str] | None = None, beta: float = 1.0,
        denoise: bool = True, contrast: bool = True, group: GroupSpec = "all", projection=None, seed: int = 0,
        batch_size: int = 64, method: str = "auto") -> np.ndarray:
    """DDA scores ``[n_queries, n_candidates]`` (higher = more responsible for the hallucination).

    ``checkpoints``: the fine-tuning epoch checkpoints in order (paths or models); ``base``: the
    model before fine-tuning (needed when ``beta != 0``); ``correct``: the correct outputs
    (``Examples`` with the same prompts, or a list of target strings; needed when ``contrast``).
    ``queries`` hold the test prompts with the hallucinated outputs as targets.
    """
    check_examples(queries, "queries")
    check_examples(candidates, "candidates")
    beta = check_beta(beta)
    ckpts = as_checkpoint_list(checkpoints)
    used = ckpts if denoise else ckpts[-1:]
    if beta != 0 and base is None:
        raise ValueError("debiasing (beta != 0) needs the base model before fine-tuning: pass base=...")
    check_same_architecture(used + ([base] if beta != 0 else []))
    right = None
    if contrast:
        if correct is None:
            raise ValueError("the contrastive score needs the correct outputs: pass correct=... "
                             "(or contrast=False)")
        if isinstance(correct, Examples):
            if correct.prompts != queries.prompts:
                raise ValueError("correct outputs must share the hallucinated queries' prompts, in order")
            targets = list(correct.targets)
        else:
            targets = list(correct)
        if len(targets) != len(queries):
            raise ValueError(f"{len(targets)} correct outputs for {len(queries)} queries")
        right = Examples(list(queries.prompts), targets)
    parts = influence_dots(base if beta != 0 else None, used, task, queries, right, candidates, group=group,
                           projection=projection, seed=seed, batch_size=batch_size, method=method)
    return parts.dda(beta=beta, denoise=True, contrast=contrast)


__all__ = ["check_beta", "BETA_UNITS", "SIMILARITIES", "debias_terms", "InfluenceDots", "influence_dots", "dda"]
