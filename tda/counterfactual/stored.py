"""Retraining runs as store artifacts, keyed by their subset, so chapters and re-runs share them.

A retrain is :func:`tda.counterfactual.retrain.finetune_subset` from a run's base checkpoint on the
run's training examples minus some of them, with the run's seed, batches and learning rates. Only
the fine-tuning stage is ever retrained, never the base model. Its store key
(:func:`retrain_params`) is the run's own key (what the fine-tuning run depends on: base model,
data, recipe), a digest of the training texts and the recipe, and :func:`subset_digest` of the
kept rows: the same subset of the same run is trained once, whichever experiment asks (a
leave-k-out set that two methods share, a chapter run again), and any other subset gets its own
entry. An entry holds the retrained model (``save_pretrained``, with the tokenizer) and
``state.json`` (``finetune_subset``'s summary), so ``tda.checkpoints.load_checkpoint`` reads it.

:func:`retrain_all` builds the missing entries of a list of subsets, in this process or in
``workers`` processes: retrains are independent. Every retrain trains with ``tda.threads``' count
wherever it runs (an entry must not depend on which process built it), so more workers pay off
only on a machine with more cores than workers x ``TDA_THREADS``.
"""

from __future__ import annotations

import concurrent.futures as cf
import ctypes
import hashlib
import json
import multiprocessing
import os
import signal
import sys
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from ..checkpoints import STATE, load_checkpoint
from ..progress import progress
from ..store import Store, text_digest
from ..task import CausalLMTask, Examples
from ..threads import training_threads
from ..train import BATCH_ORDER, TrainConfig
from .retrain import finetune_subset, keep_mask

STAGE = "counterfactual-retrain"
FORMAT = 2  # bump when what an entry holds, or how it is trained, changes (2: on tda.threads' count, 2026-11-30)


def subset_digest(keep: np.ndarray) -> str:
    """A short hash of a keep mask (its length and which rows it keeps)."""
    mask = np.asarray(keep, dtype=bool).ravel()
    h = hashlib.sha256()
    h.update(str(mask.size).encode())
    h.update(np.packbits(mask).tobytes())
    return h.hexdigest()[:16]


def retrain_params(run_key: Mapping, train: Examples, config: TrainConfig, keep) -> dict:
    """Store parameters of one retrain: the run, its training data and recipe, and the subset."""
    mask = keep_mask(keep, len(train))
    return {"run": dict(run_key), "train": text_digest(list(train.prompts) + list(train.targets)),
            "config": asdict(config), "n_examples": len(train), "n_kept": int(mask.sum()),
            "kept": subset_digest(mask), "format": FORMAT, "batch_order": BATCH_ORDER}


def _build(folder: Path, base: str | Path, task: CausalLMTask, train: Examples, config: TrainConfig,
           mask: np.ndarray, desc: str) -> None:
    model, tokenizer = load_checkpoint(base)
    state = finetune_subset(model, task, train, mask, config, desc=desc)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / STATE).write_text(json.dumps({**state, "kept": subset_digest(mask)}, indent=1))


def stored_retrain(store: Store, run_key: Mapping, base: str | Path, task: CausalLMTask, train: Examples,
                   config: TrainConfig, keep, desc: str = "retrain") -> Path:
    """The folder of the model fine-tuned from ``base`` on ``train``'s rows ``keep`` (a mask or
    indices) with ``config``; trained and stored the first time, read after."""
    mask = keep_mask(keep, len(train))
    params = retrain_params(run_key, train, config, mask)
    return store.get_or_create(STAGE, params, lambda work: _build(work, base, task, train, config, mask, desc))


def is_stored(store: Store, run_key: Mapping, train: Examples, config: TrainConfig, keep) -> bool:
    """Whether the retrain of this subset is in the store already."""
    return store.has(STAGE, retrain_params(run_key, train, config, keep))


def load_retrained(folder: str | Path):
    """The retrained model of a store entry (in eval mode)."""
    model, _ = load_checkpoint(folder)
    model.eval()
    return model


def end_with_parent(parent: int) -> None:
    """Make this process end when ``parent`` (the process that started it) dies.

    A retraining worker whose notebook kernel is killed would otherwise train on, unseen, for as
    long as its retrains last (measured: two workers went on for 40 minutes). Linux only
    (``prctl(PR_SET_PDEATHSIG)``); elsewhere nothing changes."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG: SIGTERM when the parent dies
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the request was made
        os._exit(1)


def _worker_init(parent: int) -> None:
    end_with_parent(parent)
    torch.set_num_threads(1)  # outside training; training itself uses tda.threads' count
    os.environ["TDA_PROGRESS"] = "0"


def _job(root: str, run_key: dict, base: str, task: CausalLMTask, train: Examples, config: TrainConfig,
         mask: np.ndarray) -> str:
    return str(stored_retrain(Store(root), run_key, base, task, train, config, mask))


def oversubscription(workers: int, threads: int, cores: int | None) -> str | None:
    """Why ``workers`` pool processes of ``threads`` training threads each are a bad idea on ``cores``
    cores, or None when they fit. More threads than cores make torch's OpenMP threads spin waiting for
    each other: measured on 2 cores, two workers of 2 threads took 57 s a retrain where one at a
    time took 11.7 s (quick TREx analogue, 2026-11-30)."""
    if workers <= 1 or not cores or workers * threads <= cores:
        return None
    return (f"{workers} retraining workers x {threads} training threads = {workers * threads} threads on {cores} "
            f"CPU cores: the threads will wait for each other and the retrains run several times slower than "
            f"one at a time (measured 5x on 2 cores). Use workers={max(1, cores // threads)}, or a machine with "
            f"more cores.")


def retrain_all(store: Store, run_key: Mapping, base: str | Path, task: CausalLMTask, train: Examples,
                config: TrainConfig, keeps: Sequence, workers: int = 1, desc: str = "retrains") -> list[Path]:
    """The folders of the retrains of every subset in ``keeps`` (masks or index lists), in order.

    Subsets already stored are read; the others are trained, each once however often it appears,
    in this process (``workers=1``) or in a pool of ``workers`` processes. A progress bar counts
    the retrains to train."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    masks = [keep_mask(k, len(train)) for k in keeps]
    todo: dict[str, np.ndarray] = {}
    for m in masks:
        if not is_stored(store, run_key, train, config, m):
            todo.setdefault(subset_digest(m), m)
    if todo and workers > 1 and len(todo) > 1:
        n_workers = min(workers, len(todo))
        why = oversubscription(n_workers, training_threads(), os.cpu_count())
        if why:
            warnings.warn(why, RuntimeWarning, stacklevel=2)
        ctx = multiprocessing.get_context("spawn")
        with cf.ProcessPoolExecutor(max_workers=n_workers, mp_context=ctx,
                                    initializer=_worker_init, initargs=(os.getpid(),)) as pool:
            futures = [pool.submit(_job, str(store.root), dict(run_key), str(base), task, train, config, m)
                       for m in todo.values()]
            for f in progress(cf.as_completed(futures), desc=desc, total=len(futures)):
                f.result()
    else:
        for i, m in enumerate(progress(list(todo.values()), desc=desc, total=len(todo))):
            stored_retrain(store, run_key, base, task, train, config, m, desc=f"retrain {i + 1}/{len(todo)}")
    return [stored_retrain(store, run_key, base, task, train, config, m) for m in masks]


__all__ = ["STAGE", "FORMAT", "oversubscription", "subset_digest", "retrain_params", "stored_retrain", "is_stored", "load_retrained",
           "retrain_all"]
