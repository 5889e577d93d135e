"""Part II's experiments: DDA (Wu et al. 2024) on the small world, from poisoning to per-query AUC.

One *run* is a model size, a seed, and everything the seed decides: the synthetic news split, which
England summaries are poisoned (England -> China), the batch order of the fine-tuning run, the
greedy summaries of the held-out England documents, the hallucinated outputs among them (the traced
queries), and every method's scores over **all** training documents. The notebooks of Part II only
choose settings, call :func:`run` (or :func:`runs`), and tabulate.

Pipeline of one run; each expensive step is an artifact in the store, keyed by all its parameters
(world included), so the four chapters share them — whichever notebook runs first pays::

    synthetic_news ─> poison ─> finetune (checkpoint + AdamW state per epoch; epoch-000 = base θ0)
                                   │
                                   └─> generations (greedy, final checkpoint) ─> hallucinated queries
                                                                                   │
          influence dots per checkpoint θ0..θN: <grad l(test output), grad l(train doc)>   (exact)
          TRAK features at the final checkpoint (projected)                    BM25 · random
                                                                                   │
                                    per-query AUC over all training docs (poisoned = positive), recall@k

DDA is stored *decomposed*: for every checkpoint ``θ_i`` (``i = 0`` the base model before
fine-tuning, ``1..N`` the epoch checkpoints), the exact dot products of the gradients of each test
output — the hallucinated output and its correct counterpart — with the gradient of every training
example (:class:`InfluenceDots`). Every DDA variant is then a linear combination of stored numbers::

    DDA(β; denoise, contrast) = C[ mean_{i=1..N} IS_θi  (or IS_θN without denoise)  -  β IS_θ0 ]
    C[S] = S(hallucinated) - S(correct)        (or S(hallucinated) without contrast)

and TracIn (Pruthi et al.) is ``sum_i η_i IS_θi(hallucinated)`` with ``η_i`` the mean learning
rate of epoch ``i``. So the ablation and the β sweep cost no gradient, and the tests check that
the combinations equal ``tda.methods.dda`` computed from scratch.

Settings (written down before any AUC was computed; see ``PRESETS``):

- data: ``synthetic_news`` with a quarter of the documents about England, a quarter held out;
  40% of the England training summaries poisoned. Found by the engineer who wrote
  ``tda.data.xsum`` (with earlier base models): at 20–30% the tiny model hallucinated on 0–5% of
  test prompts, at 40% on roughly a third; with a constant learning rate the rate swung from epoch
  to epoch, with a linear decay it settled. How many documents and epochs: see ``PRESETS``.
- fine-tuning: AdamW, lr 3e-3 decaying linearly to 0, batch 16, a checkpoint per epoch.
- DDA's β: 1 in the main comparison and the ablation (inside the plateau from ~0.4 that the paper
  reports); the β chapter sweeps it.
- gradients: all parameters, exact (no projection): for the tiny model vmap's per-example
  gradients cost less than the probe path's projection and carry no projection noise.
- TRAK: the final checkpoint only (an ensemble over independently trained models is what TRAK
  does; we cannot afford it), Rademacher projection to ``trak_dim`` dimensions, ridge ``1e-3``
  relative to the kernel's mean eigenvalue (the engine's default).
- BM25: the hallucinated summary as the query, each training document's text (article and, as it
  was trained, its possibly poisoned summary) as a candidate; ``BM25Plus`` defaults.
- metrics: ROC AUC of each query's ranking of all training documents (ties count half), averaged
  over the queries of a run, then mean ± std over seeds; recall@k likewise.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .progress import Timer
from .results import fmt, verdict_from
from .store import text_digest

METHODS = ("DDA", "TracIn", "TRAK", "BM25", "random")
# Beyond the paper (not part of any verdict): TracIn with FTRACE's optimizer correction, i.e. every
# gradient divided by sqrt(AdamW's second moment) + 1e-7 at its checkpoint, as FTRACE's code does.
EXTRA_METHODS = ("TracIn+Adam",)
# The ablation of claim B2, as (denoise, debias, contrast) switches of DDA.
VARIANTS: dict[str, dict[str, bool]] = {
    "DDA (full)": {"denoise": True, "debias": True, "contrast": True},
    "without denoise": {"denoise": False, "debias": True, "contrast": True},
    "without debias": {"denoise": True, "debias": False, "contrast": True},
    "without contrast": {"denoise": True, "debias": True, "contrast": False},
    "without denoise and debias": {"denoise": False, "debias": False, "contrast": True},
}
FORMAT = 1  # bump when what a stored artifact of this module holds changes


# ---------------------------------------------------------------------------------------------
# settings
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DDASettings:
    """Everything that defines a run besides the world, the model size and the seed."""

    pretrain: Mapping | None = None  # overrides of the base models' pre-training (tda.base.pretrain_config)
    # data (tda.data.xsum.synthetic_news and poison)
    n_docs: int = 300
    target_share: float = 0.25
    test_fraction: float = 0.25
    source_word: str = "England"
    target_word: str = "China"
    poison_fraction: float | None = 0.4  # share of the training summaries naming source_word
    n_poison: int | None = None  # or an exact count (give one of the two)
    # fine-tuning (tda.train.TrainConfig; the run's seed is the seed of the batch order)
    epochs: int = 6
    lr: float = 3e-3
    batch_size: int = 16
    schedule: str = "linear"
    # generation (tda.hallucination.find_hallucinations)
    max_new_tokens: int = 40
    # attribution
    group: str = "all"  # parameter group of the gradients (tda.gradients.select_parameters)
    grad_batch_size: int = 64
    trak_dim: int = 128
    trak_lam: float = 1e-3
    beta: float = 1.0  # DDA's debias weight in the main comparison and the ablation
    recall_ks: tuple[int, ...] = (10, 50)

    def __post_init__(self) -> None:
        if (self.poison_fraction is None) == (self.n_poison is None):
            raise ValueError("give exactly one of poison_fraction and n_poison "
                             f"(got {self.poison_fraction} and {self.n_poison})")
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if not np.isfinite(self.beta):
            raise ValueError(f"beta must be finite, got {self.beta}")
        if self.trak_dim < 1:
            raise ValueError(f"trak_dim must be >= 1, got {self.trak_dim}")
        ks = tuple(int(k) for k in self.recall_ks)
        if not ks or min(ks) < 1:
            raise ValueError(f"recall_ks must be positive integers, got {self.recall_ks}")
        object.__setattr__(self, "recall_ks", ks)

    def train_config(self, seed: int):
        from .train import TrainConfig
        return TrainConfig(epochs=self.epochs, lr=self.lr, batch_size=self.batch_size,
                           schedule=self.schedule, seed=seed)


# Per world preset. Chosen before any AUC was computed, from the hallucination rates and the cost
# alone (measured on the quick world's tiny model; 1 CPU thread, tiny: ~0.5 s per epoch of 200
# training documents, ~0.6 s per checkpoint of gradient dots):
# - 500 documents / 10 epochs (the settings found with the earlier base models) cost ~3x more than
#   300 / 6 and gave rates of 13-42%; 300 / 6 gave 32-53%, 300 / 4 37-58%, 200 / 6 25-92%.
# - default: 300 documents (225 for training, 22 of them poisoned), 6 epochs (7 checkpoints with
#   theta_0), so that the medium model's runs fit the book's time budget; on the default world the
#   tiny model then hallucinated on 37-47% of the test prompts (seeds 0-2).
# - quick: 200 documents (150 for training, 15 poisoned), 6 epochs; recall@25 ~ 2x the poisoned.
# TRAK projects to 128 dimensions, fewer than the training documents, as TRAK's kernel assumes
# (k << n); the ridge is the engine's default.
PRESETS: dict[str, DDASettings] = {
    "quick": DDASettings(n_docs=200, epochs=6, trak_dim=128, recall_ks=(10, 25)),
    "default": DDASettings(n_docs=300, epochs=6, trak_dim=128, recall_ks=(10, 50)),
}


def settings(world: str, overrides: Mapping | None = None) -> DDASettings:
    """The preset settings for a world preset, with single settings overridden."""
    base = PRESETS.get(world, PRESETS["default"])
    overrides = dict(overrides or {})
    known = {f.name for f in fields(DDASettings)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown DDA settings {unknown}; known: {sorted(known)}")
    if overrides.get("pretrain") is not None:
        overrides["pretrain"] = dict(overrides["pretrain"])
    if "recall_ks" in overrides:
        overrides["recall_ks"] = tuple(overrides["recall_ks"])
    if "n_poison" in overrides and "poison_fraction" not in overrides:
        overrides["poison_fraction"] = None
    if "poison_fraction" in overrides and "n_poison" not in overrides:
        overrides["n_poison"] = None
    return replace(base, **overrides)


# ---------------------------------------------------------------------------------------------
# data, fine-tuning, generation
# ---------------------------------------------------------------------------------------------
@dataclass
class PoisonedData:
    """The train split (as trained: some summaries poisoned), the England test documents, and what
    poisoning did."""

    train: object  # datasets.Dataset in the XSum schema, with ``poisoned``
    test: object  # the test documents whose true summary names the source word
    report: object  # tda.data.xsum.PoisonReport

    @property
    def poisoned(self) -> np.ndarray:
        return np.asarray(self.train["poisoned"], dtype=bool)


def poisoned_data(setup, s: DDASettings, seed: int) -> PoisonedData:
    """Synthetic news split by ``seed``, ``source_word`` -> ``target_word`` in some training summaries.

    Errors (from ``tda.data.xsum``): a source word in no summary, or more documents to poison than
    summaries naming it, raise ValueError with both numbers; so does a run with nothing poisoned
    (``n_poison=0``: AUC needs poisoned documents) or no test document naming the source word.
    """
    from .data.xsum import documents_naming, poison, synthetic_news

    data = synthetic_news(setup.world, n_docs=s.n_docs, target=s.source_word, target_share=s.target_share,
                          test_fraction=s.test_fraction, seed=seed)
    train, report = poison(data["train"], s.source_word, s.target_word, n=s.n_poison, fraction=s.poison_fraction,
                           seed=seed, return_report=True)
    if report.n_poisoned == 0:
        raise ValueError(f"no training summary was poisoned ({s.n_poison=}, {s.poison_fraction=} of "
                         f"{report.n_candidates} summaries naming {s.source_word!r}): there is nothing to trace "
                         "and AUC needs poisoned documents; poison at least one")
    if report.n_poisoned == len(train):
        raise ValueError("every training document is poisoned: AUC needs clean documents too")
    test = documents_naming(data["test"], s.source_word)
    if len(test) == 0:
        raise ValueError(f"no test document's summary names {s.source_word!r}: nothing to prompt; raise "
                         f"target_share ({s.target_share}) or test_fraction ({s.test_fraction})")
    return PoisonedData(train=train, test=test, report=report)


def run_key(setup, s: DDASettings, size: str, seed: int, data: PoisonedData | None = None) -> dict:
    """Store parameters of a run's fine-tuning: world, base model, data, poisoning and training."""
    from .base import pretrain_config, world_params

    data = data if data is not None else poisoned_data(setup, s, seed)
    data_fields = ("n_docs", "target_share", "test_fraction", "source_word", "target_word", "poison_fraction",
                   "n_poison")
    return {**world_params(setup.world_config), "size": size, "pretrain": asdict(pretrain_config(setup, size, s.pretrain)),
            "data": {k: getattr(s, k) for k in data_fields}, "seed": seed,
            "train_digest": text_digest(list(data.train["summary"]) + list(data.train["document"])),
            "train": asdict(s.train_config(seed)), "format": FORMAT}


def finetune(setup, s: DDASettings, size: str, seed: int, data: PoisonedData | None = None) -> Path:
    """The poisoned fine-tuning run (checkpoint + AdamW state per epoch; ``epoch-000`` is the base
    model θ0), from the store if it is there."""
    from .base import load_base
    from .data.xsum import to_examples
    from .train import train

    data = data if data is not None else poisoned_data(setup, s, seed)

    def build(work: Path) -> None:
        model, tokenizer = load_base(setup, size, s.pretrain)
        train(model, tokenizer, setup.task(), to_examples(data.train), work, s.train_config(seed),
              desc=f"fine-tune {size} on poisoned news (seed {seed})")

    return setup.store.get_or_create("dda-finetune", run_key(setup, s, size, seed, data), build, resumable=True)


def generations(setup, s: DDASettings, size: str, seed: int, data: PoisonedData | None = None):
    """The greedy summaries of the England test documents by the final checkpoint, classified
    (a ``tda.hallucination.HallucinationReport``), from the store if there."""
    from .hallucination import HallucinationReport, find_hallucinations
    from .train import list_checkpoints, load_checkpoint

    data = data if data is not None else poisoned_data(setup, s, seed)
    run_dir = finetune(setup, s, size, seed, data)
    key = {**run_key(setup, s, size, seed, data), "max_new_tokens": s.max_new_tokens, "decoding": "greedy"}

    def build(work: Path) -> None:
        model, _ = load_checkpoint(list_checkpoints(run_dir)[-1])
        report = find_hallucinations(model, setup.task(), data.test, s.source_word, s.target_word,
                                     max_new_tokens=s.max_new_tokens)
        (work / "generations.json").write_text(json.dumps(
            {"source_word": report.source_word, "target_word": report.target_word, "rows": report.rows}, indent=1))

    folder = setup.store.get_or_create("dda-generations", key, build)
    saved = json.loads((folder / "generations.json").read_text())
    return HallucinationReport(source_word=saved["source_word"], target_word=saved["target_word"], rows=saved["rows"])


def epoch_learning_rates(config, n_examples: int) -> np.ndarray:
    """Mean learning rate of each epoch of a training run (TracIn's checkpoint weights η_i)."""
    import math

    from .train import learning_rate

    steps = math.ceil(n_examples / config.batch_size)
    total = steps * config.epochs
    return np.array([np.mean([learning_rate(config, e * steps + j, total) for j in range(steps)])
                     for e in range(config.epochs)])


# ---------------------------------------------------------------------------------------------
# influence dots: every DDA variant and TracIn from one gradient pass per checkpoint
# ---------------------------------------------------------------------------------------------
@dataclass
class InfluenceDots:
    """``dots[i, j, c] = <grad l(test_j; θ_i), grad l(train_c; θ_i)>``, exact.

    ``i = 0`` is the base model θ0 (before fine-tuning), ``i = 1..N`` the epoch checkpoints; test
    rows ``0..Q-1`` are the hallucinated outputs, ``Q..2Q-1`` their correct counterparts (same
    prompts, target word replaced by the source word). ``lr_weights[i-1]`` is the mean learning
    rate of epoch ``i``.
    """

    dots: np.ndarray
    n_queries: int
    lr_weights: np.ndarray

    def __post_init__(self) -> None:
        self.dots = np.asarray(self.dots, dtype=np.float64)
        if self.dots.ndim != 3 or self.dots.shape[1] != 2 * self.n_queries or self.dots.shape[0] < 2:
            raise ValueError(f"dots must be [1 + N checkpoints, 2 x {self.n_queries} tests, candidates], "
                             f"got shape {self.dots.shape}")
        if len(self.lr_weights) != self.dots.shape[0] - 1:
            raise ValueError(f"{len(self.lr_weights)} learning-rate weights for {self.dots.shape[0] - 1} epochs")

    @property
    def n_epochs(self) -> int:
        return self.dots.shape[0] - 1

    def dda(self, beta: float = 1.0, denoise: bool = True, contrast: bool = True, debias: bool = True) -> np.ndarray:
        """DDA scores ``[Q, candidates]``; ``debias=False`` is ``beta = 0``."""
        if not np.isfinite(beta):
            raise ValueError(f"beta must be finite, got {beta}")
        s = self.dots[1:].mean(0) if denoise else self.dots[-1]
        if debias and beta != 0:
            s = s - beta * self.dots[0]
        q = self.n_queries
        return s[:q] - s[q:] if contrast else s[:q].copy()

    def checkpoint(self, i: int, contrast: bool = True) -> np.ndarray:
        """The influence at one checkpoint alone (``i = 0``: the base model, what debias subtracts)."""
        s, q = self.dots[i], self.n_queries
        return s[:q] - s[q:] if contrast else s[:q].copy()

    def tracin(self) -> np.ndarray:
        """TracIn of the hallucinated outputs: ``sum_i η_i IS_θi`` over the epoch checkpoints."""
        return np.tensordot(self.lr_weights, self.dots[1:, : self.n_queries], axes=1)

    def variant(self, name: str, beta: float = 1.0) -> np.ndarray:
        """One of the ablation's ``VARIANTS`` by name."""
        if name not in VARIANTS:
            raise ValueError(f"unknown DDA variant {name!r}; known: {list(VARIANTS)}")
        return self.dda(beta=beta, **VARIANTS[name])

    def save(self, folder: Path) -> None:
        np.save(folder / "dots.npy", self.dots)
        (folder / "dots.json").write_text(json.dumps({"n_queries": self.n_queries,
                                                      "lr_weights": self.lr_weights.tolist()}))

    @classmethod
    def load(cls, folder: Path) -> "InfluenceDots":
        meta = json.loads((folder / "dots.json").read_text())
        return cls(np.load(folder / "dots.npy"), meta["n_queries"], np.asarray(meta["lr_weights"]))


def compute_influence_dots(checkpoints: Sequence, task, hallucinated, correct, candidates, *, group="all",
                           batch_size: int = 64, lr_weights: Sequence[float] | None = None,
                           work: Path | None = None, verbose: bool = False) -> InfluenceDots:
    """Exact gradient dots of the test outputs (hallucinated, then correct) with every candidate at
    each checkpoint (θ0 first). With ``work`` each checkpoint's matrix is saved as it is done and
    reused by a resumed call, so an interrupted run loses at most one checkpoint."""
    from .gradients import gradient_dots, load_checkpoint_model
    from .task import Examples

    if len(hallucinated) != len(correct) or list(hallucinated.prompts) != list(correct.prompts):
        raise ValueError("correct outputs must pair one to one with the hallucinated ones (same prompts, in order)")
    tests = Examples(list(hallucinated.prompts) * 2, list(hallucinated.targets) + list(correct.targets))
    mats = []
    for i, ckpt in enumerate(checkpoints):
        part = None if work is None else Path(work) / f"dots-{i:03d}.npy"
        if part is not None and part.is_file():
            mats.append(np.load(part))
            continue
        t0 = time.perf_counter()
        d = gradient_dots(load_checkpoint_model(ckpt), task, tests, candidates, group, batch_size=batch_size).dots
        if part is not None:
            tmp = part.with_name(part.stem + ".tmp.npy")
            np.save(tmp, d)
            os.replace(tmp, part)
        if verbose:
            print(f"    checkpoint {i}/{len(checkpoints) - 1}: {len(tests)} x {len(candidates)} dots in "
                  f"{time.perf_counter() - t0:.1f} s", flush=True)
        mats.append(d)
    weights = np.ones(len(checkpoints) - 1) if lr_weights is None else np.asarray(lr_weights, dtype=np.float64)
    return InfluenceDots(np.stack(mats), len(hallucinated), weights)


# ---------------------------------------------------------------------------------------------
# a run
# ---------------------------------------------------------------------------------------------
@dataclass
class Run:
    """One size and seed: data, fine-tuning, hallucinations, and (if any) every method's scores."""

    size: str
    seed: int
    settings: DDASettings
    data: PoisonedData
    run_dir: Path
    report: object  # HallucinationReport
    queries: object | None  # TracedQueries, None when nothing hallucinated
    dots: InfluenceDots | None = None
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    epoch_losses: list[float] = field(default_factory=list)
    n_parameters: int = 0

    @property
    def traced(self) -> bool:
        """Whether there is anything to trace (at least one hallucinated output)."""
        return self.queries is not None

    @property
    def poisoned(self) -> np.ndarray:
        return self.data.poisoned

    def summary(self) -> dict:
        """One row for a table: counts of data, poisoning and hallucinations."""
        rep = self.report
        return {"size": self.size, "seed": self.seed, "training documents": len(self.data.train),
                f"summaries naming {self.settings.source_word}": self.data.report.n_candidates,
                "poisoned": self.data.report.n_poisoned, "empty summaries skipped": self.data.report.n_empty_skipped,
                "test prompts": rep.n,
                "hallucinated": rep.n_hallucinated, "correct": rep.n_correct,
                "hallucination rate": rep.rate, "final training loss": self.epoch_losses[-1] if self.epoch_losses else np.nan}


def run(setup, s: DDASettings, size: str, seed: int, timer: Timer | None = None, verbose: bool = True,
        methods: Sequence[str] = METHODS) -> Run:
    """Everything of one run, each expensive stage from the store when it is there.

    When no output hallucinates the run is returned with ``queries=None`` and no scores (the
    notebooks count such runs and say so); nothing is raised.
    """
    from .hallucination import NoHallucinationsError, build_queries
    from .models import parameter_count
    from .train import list_checkpoints, load_checkpoint, read_state

    unknown = sorted(set(methods) - set(METHODS) - set(EXTRA_METHODS))
    if unknown:
        raise ValueError(f"unknown methods {unknown}; known: {list(METHODS + EXTRA_METHODS)}")
    timer = timer or Timer()
    if verbose:
        print(f"{size}, seed {seed}:", flush=True)
    data = poisoned_data(setup, s, seed)
    with timer(f"fine-tune {size}", verbose):
        run_dir = finetune(setup, s, size, seed, data)
    ckpts = list_checkpoints(run_dir)
    state = read_state(ckpts[-1])
    with timer(f"generate {size}", verbose):
        report = generations(setup, s, size, seed, data)
    try:
        queries = build_queries(report)
    except NoHallucinationsError:
        queries = None
    model, _ = load_checkpoint(ckpts[-1])
    out = Run(size=size, seed=seed, settings=s, data=data, run_dir=run_dir, report=report, queries=queries,
              epoch_losses=list(state["epoch_losses"]), n_parameters=parameter_count(model))
    if verbose:
        print(f"  {data.report.n_poisoned} of {data.report.n_candidates} {s.source_word} summaries poisoned; "
              f"{report.n_hallucinated} of {report.n} test summaries hallucinate ({report.rate:.0%})", flush=True)
    if queries is None:
        return out
    if any(m in methods for m in ("DDA", "TracIn")):
        with timer(f"gradients {size} (DDA, TracIn)", verbose):
            out.dots = influence_dots(setup, s, size, seed, data, queries, ckpts, verbose)
        if "DDA" in methods:
            out.scores["DDA"] = out.dots.dda(beta=s.beta)
        if "TracIn" in methods:
            out.scores["TracIn"] = out.dots.tracin()
    if "TracIn+Adam" in methods:
        with timer(f"TracIn+Adam {size}", verbose):
            out.scores["TracIn+Adam"] = corrected_tracin_scores(setup, s, size, seed, data, queries, ckpts)
    if "TRAK" in methods:
        with timer(f"TRAK {size}", verbose):
            out.scores["TRAK"] = trak_scores(setup, s, size, seed, data, queries, ckpts[-1])
    if "BM25" in methods:
        with timer("BM25", verbose):
            out.scores["BM25"] = bm25_scores(queries, data.train)
    if "random" in methods:
        out.scores["random"] = random_scores(len(queries), len(data.train), seed)
    return out


def _query_key(setup, s, size, seed, data, queries) -> dict:
    return {**run_key(setup, s, size, seed, data), "max_new_tokens": s.max_new_tokens, "decoding": "greedy",
            "queries": text_digest(list(queries.prompts) + list(queries.hallucinated) + list(queries.correct))}


def influence_dots(setup, s: DDASettings, size: str, seed: int, data: PoisonedData, queries, checkpoints,
                   verbose: bool = True) -> InfluenceDots:
    """The run's :class:`InfluenceDots` (θ0 and every epoch), from the store if there."""
    from .data.xsum import to_examples

    key = {**_query_key(setup, s, size, seed, data, queries), "group": s.group}
    weights = epoch_learning_rates(s.train_config(seed), len(data.train))

    def build(work: Path) -> None:
        d = compute_influence_dots(checkpoints, setup.task(), queries.hallucinated_examples(),
                                   queries.correct_examples(), to_examples(data.train), group=s.group,
                                   batch_size=s.grad_batch_size, lr_weights=weights, work=work, verbose=verbose)
        d.save(work)
        for p in work.glob("dots-*.npy"):
            p.unlink()

    return InfluenceDots.load(setup.store.get_or_create("dda-dots", key, build, resumable=True))


def trak_scores(setup, s: DDASettings, size: str, seed: int, data: PoisonedData, queries, checkpoint) -> np.ndarray:
    """TRAK at the final checkpoint (see the module docstring), from the store if there."""
    from .data.xsum import to_examples
    from .methods import trak

    key = {**_query_key(setup, s, size, seed, data, queries), "group": s.group, "trak_dim": s.trak_dim,
           "trak_lam": s.trak_lam}

    def build(work: Path) -> None:
        scores = trak([checkpoint], setup.task(), queries.hallucinated_examples(), to_examples(data.train),
                      group=s.group, projection=s.trak_dim, seed=seed, lam=s.trak_lam, batch_size=s.grad_batch_size)
        np.save(work / "trak.npy", scores)

    return np.load(setup.store.get_or_create("dda-trak", key, build) / "trak.npy")


def corrected_tracin_scores(setup, s: DDASettings, size: str, seed: int, data: PoisonedData, queries,
                            checkpoints) -> np.ndarray:
    """TracIn over the epoch checkpoints (learning-rate weighted, as ``InfluenceDots.tracin``) with
    FTRACE's optimizer correction (``tda.methods.tracin(correction=True)``), from the store if there.
    One more gradient pass per epoch checkpoint."""
    from .data.xsum import to_examples
    from .methods import tracin

    key = {**_query_key(setup, s, size, seed, data, queries), "group": s.group, "correction": "adam"}
    weights = epoch_learning_rates(s.train_config(seed), len(data.train))

    def build(work: Path) -> None:
        scores = tracin(list(checkpoints[1:]), setup.task(), queries.hallucinated_examples(), to_examples(data.train),
                        group=s.group, lr_weights=weights, reduce="sum", correction=True,
                        batch_size=s.grad_batch_size)
        np.save(work / "tracin_adam.npy", scores)

    return np.load(setup.store.get_or_create("dda-tracin-adam", key, build) / "tracin_adam.npy")


def candidate_texts(train) -> list[str]:
    """What BM25 matches against: each training document's article and its (trained) summary."""
    return [f"{d} {s}" for d, s in zip(train["document"], train["summary"])]


def bm25_scores(queries, train) -> np.ndarray:
    """BM25Plus of each hallucinated summary against every training document (module docstring)."""
    from .methods import bm25
    return bm25(list(queries.hallucinated), candidate_texts(train))


def random_scores(n_queries: int, n_candidates: int, seed: int) -> np.ndarray:
    """Chance level: seeded uniform scores."""
    from .methods import random_scores as rs
    return rs(range(n_queries), range(n_candidates), seed=seed)


def runs(setup, s: DDASettings, sizes: Sequence[str], seeds: Sequence[int], timer: Timer | None = None,
         verbose: bool = True, methods: Sequence[str] = METHODS) -> list[Run]:
    """:func:`run` for every size and seed."""
    timer = timer or Timer()
    return [run(setup, s, size, seed, timer, verbose, methods) for size in sizes for seed in seeds]


# ---------------------------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------------------------
def evaluate(scores: np.ndarray, poisoned: np.ndarray, ks: Sequence[int] = (10, 50)) -> dict[str, np.ndarray]:
    """Per-query ``auc`` (all candidates, poisoned = positive, ties half) and ``recall@k``."""
    from .metrics import recall_at_k, roc_auc

    scores = np.asarray(scores, dtype=np.float64)
    poisoned = np.asarray(poisoned, dtype=bool)
    if scores.ndim != 2 or scores.shape[1] != len(poisoned):
        raise ValueError(f"scores of shape {scores.shape} for {len(poisoned)} training documents")
    if not poisoned.any() or poisoned.all():
        raise ValueError("AUC needs both poisoned and clean training documents")
    rel = np.broadcast_to(poisoned, scores.shape).copy()
    out = {"auc": roc_auc(scores, rel)}
    for k in ks:
        out[f"recall@{k}"] = recall_at_k(scores, rel, k)
    return out


def per_query_table(run_list: Sequence[Run], scores_of=None, ks: Sequence[int] | None = None):
    """Long table: one row per (size, seed, method, query) with ``auc`` and ``recall@k``.

    ``scores_of(run) -> {name: scores}`` chooses what is evaluated (default: ``run.scores``).
    Runs without hallucinations contribute no rows.
    """
    import pandas as pd

    rows = []
    for r in run_list:
        if not r.traced:
            continue
        ks_ = ks or r.settings.recall_ks
        for name, sc in (scores_of(r) if scores_of else r.scores).items():
            m = evaluate(sc, r.poisoned, ks_)
            for q in range(sc.shape[0]):
                rows.append({"size": r.size, "seed": r.seed, "method": name, "query": q,
                             **{k: float(v[q]) for k, v in m.items()}})
    return pd.DataFrame(rows)


def seed_means(per_query, by: Sequence[str] = ("size", "method")):
    """Per-query metrics averaged within each run: one row per (``by``, seed)."""
    if per_query.empty:
        return per_query
    metrics_ = [c for c in per_query.columns if c == "auc" or c.startswith("recall@")]
    return per_query.groupby(list(by) + ["seed"], sort=False)[metrics_].mean().reset_index()


def summary_table(per_query, by: Sequence[str] = ("size", "method")):
    """Mean and std over seeds of the per-run averages, plus the number of seeds and queries."""
    import pandas as pd

    if per_query.empty:
        return pd.DataFrame()
    means = seed_means(per_query, by)
    metrics_ = [c for c in means.columns if c == "auc" or c.startswith("recall@")]
    g = means.groupby(list(by), sort=False)
    out = g[metrics_].agg(["mean", "std"])
    out.columns = [f"{m} {stat}" for m, stat in out.columns]
    out["seeds"] = g.size()
    out["queries"] = per_query.groupby(list(by), sort=False).size()
    return out.reset_index()


def hallucination_table(run_list: Sequence[Run]):
    import pandas as pd
    return pd.DataFrame([r.summary() for r in run_list])


def example_outputs(run_list: Sequence[Run], n: int = 3):
    """A few hallucinated outputs with their reference summary and correct counterpart."""
    import pandas as pd

    rows = []
    for r in run_list:
        if r.traced:
            for row in [x for x in r.report.rows if x["hallucinated"]][:n]:
                rows.append({"seed": r.seed, "reference summary": row["summary"], "generated": row["generated"]})
        if len(rows) >= n:
            break
    return pd.DataFrame(rows[:n])


def news_event(document: str) -> str:
    """The event type of a synthetic news document (flood, election, ...), read from its first
    sentence, which is always its event's first template; "other" for anything else (real XSum)."""
    import re

    from .data.world import NEWS_EVENTS

    first = document.split(" . ")[0].strip().removesuffix(" .") + " ."
    for name, spec in NEWS_EVENTS.items():
        pattern = re.escape(spec["doc"][0])
        pattern = re.sub(r"\\\{[a-z]+\\\}", ".+", pattern)
        if re.fullmatch(pattern, first):
            return name
    return "other"


def event_table(run_list: Sequence[Run]):
    """Per event type, pooled over runs: how many England training summaries were poisoned, and how
    often the model hallucinates on England test documents of that type."""
    import pandas as pd

    from .data.xsum import contains_word

    rows = []
    for r in run_list:
        src = r.settings.source_word
        for doc, summary, flag in zip(r.data.train["document"], r.data.train["summary"], r.poisoned):
            if flag or contains_word(summary, src):
                rows.append({"event": news_event(doc), "kind": "train", "poisoned": bool(flag), "hallucinated": False})
        for row in r.report.rows:
            rows.append({"event": news_event(row["document"]), "kind": "test", "poisoned": False,
                         "hallucinated": bool(row["hallucinated"])})
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    train = df[df.kind == "train"].groupby("event").agg(**{"England training docs": ("poisoned", "size"),
                                                            "poisoned": ("poisoned", "sum")})
    train["poisoned share"] = train["poisoned"] / train["England training docs"]
    test = df[df.kind == "test"].groupby("event").agg(**{"test prompts": ("hallucinated", "size"),
                                                          "hallucinated": ("hallucinated", "sum")})
    test["hallucination rate"] = test["hallucinated"] / test["test prompts"]
    return train.join(test, how="outer").fillna(0).reset_index()


# ---------------------------------------------------------------------------------------------
# ablation, beta, sizes
# ---------------------------------------------------------------------------------------------
def variant_scores(r: Run, beta: float | None = None) -> dict[str, np.ndarray]:
    """Every ablation variant of a run, from its stored dots (no gradient)."""
    beta = r.settings.beta if beta is None else beta
    return {name: r.dots.variant(name, beta) for name in VARIANTS}


def beta_scores(betas: Sequence[float], **switches):
    """A ``scores_of`` for :func:`per_query_table`: DDA at each β (method name ``"beta=<β>"``)."""
    def scores_of(r: Run) -> dict[str, np.ndarray]:
        return {f"beta={b:g}": r.dots.dda(beta=b, **switches) for b in betas}
    return scores_of


def beta_curve(run_list: Sequence[Run], betas: Sequence[float], **switches):
    """Mean ± std over seeds of DDA's AUC at each β: columns ``beta``, ``auc mean``, ``auc std``."""
    import pandas as pd

    pq = per_query_table(run_list, beta_scores(betas, **switches))
    if pq.empty:
        return pd.DataFrame(columns=["size", "beta", "auc mean", "auc std", "seeds"])
    table = summary_table(pq)
    table["beta"] = table["method"].str.removeprefix("beta=").astype(float)
    return table[["size", "beta", "auc mean", "auc std", "seeds"]]


def debias_diagnostics(run_list: Sequence[Run], with_losses: bool = True):
    """Why debiasing helps or hurts, per run: how large the subtracted term is and what it ranks.

    Per query, with ``signal = C[mean_i IS_θi]`` and ``bias = C[IS_θ0]`` (C the contrast), over the
    training documents: ``scale`` = ||bias|| / ||signal|| (β = 1/scale subtracts a term as large as
    the signal), ``correlation`` of the two rankings' scores, and the AUC of ``bias`` on its own
    (above 0.5: the base model's score already points at the poisoned documents, so subtracting it
    removes signal). Medians over the run's queries; AUCs are means as elsewhere. With
    ``with_losses``, the mean per-token loss of the training examples at θ0 and at the last
    checkpoint (a forward pass over them at each; gradients grow with the loss).
    """
    import pandas as pd

    from .data.xsum import to_examples
    from .task import losses, task_for
    from .train import list_checkpoints, load_checkpoint

    rows = []
    for r in run_list:
        if not r.traced or r.dots is None:
            continue
        d, q = r.dots, r.dots.n_queries
        m = d.dots[1:].mean(0)
        signal, bias = m[:q] - m[q:], d.dots[0][:q] - d.dots[0][q:]
        ratio = np.linalg.norm(bias, axis=1) / np.maximum(np.linalg.norm(signal, axis=1), 1e-300)
        corr = [np.corrcoef(bias[j], signal[j])[0, 1] for j in range(q)]
        rows.append({"size": r.size, "seed": r.seed, "queries": q, "scale of C[IS_θ0] / C[mean IS_θi]": float(np.median(ratio)),
                     "correlation": float(np.median(corr)), "AUC of C[IS_θ0] alone": float(evaluate(bias, r.poisoned)["auc"].mean()),
                     "AUC at β=0": float(evaluate(signal, r.poisoned)["auc"].mean()),
                     f"AUC at β={r.settings.beta:g}": float(evaluate(d.dda(beta=r.settings.beta), r.poisoned)["auc"].mean())})
        if with_losses:
            ckpts = list_checkpoints(r.run_dir)
            for label, ckpt in (("loss at θ0", ckpts[0]), ("loss at θN", ckpts[-1])):
                model, tok = load_checkpoint(ckpt)
                rows[-1][label] = float(losses(model, task_for(model, tok), to_examples(r.data.train)).mean())
    return pd.DataFrame(rows)


def document_kinds(r: Run) -> np.ndarray:
    """Per training document: "poisoned", "about <target>" (an honest summary naming the target
    word), "about <source>" (a clean summary naming the source word) or "other"."""
    from .data.xsum import contains_word

    s = r.settings
    out = []
    for summary, flag in zip(r.data.train["summary"], r.poisoned):
        if flag:
            out.append("poisoned")
        elif contains_word(summary, s.target_word):
            out.append(f"about {s.target_word}")
        elif contains_word(summary, s.source_word):
            out.append(f"about {s.source_word}")
        else:
            out.append("other")
    return np.asarray(out)


def top_k_composition(run_list: Sequence[Run], methods: Sequence[str] | None = None):
    """What each method ranks first: the kinds of documents (``document_kinds``) among its top k,
    with k the number of poisoned documents of the run (a perfect ranking is 100% poisoned);
    shares averaged over the queries of a run, then over runs."""
    import pandas as pd

    rows = []
    for r in run_list:
        if not r.traced:
            continue
        kinds, k = document_kinds(r), int(r.poisoned.sum())
        for name, sc in r.scores.items():
            if methods is not None and name not in methods:
                continue
            top = np.argsort(-sc, axis=1, kind="stable")[:, :k]
            for q in range(sc.shape[0]):
                values, counts = np.unique(kinds[top[q]], return_counts=True)
                rows.append({"seed": r.seed, "method": name, **{v: c / k for v, c in zip(values, counts)}})
    if not rows:
        return pd.DataFrame()
    df = pd.DataFrame(rows).fillna(0.0)
    cols = [c for c in ["poisoned"] + sorted(set(df.columns) - {"seed", "method", "poisoned"}) if c in df.columns]
    by_run = df.groupby(["method", "seed"], sort=False)[cols].mean()
    out = by_run.groupby("method", sort=False).mean()
    order = [m for m in (methods or METHODS) if m in out.index] + [m for m in out.index if m not in (methods or METHODS)]
    return out.loc[order]


def checkpoint_curve(run_list: Sequence[Run], contrast: bool = True):
    """AUC of the influence at each single checkpoint (0 = the base model θ0), mean ± std over seeds —
    what denoising averages over."""
    import pandas as pd

    def scores_of(r: Run) -> dict[str, np.ndarray]:
        return {f"{i}": r.dots.checkpoint(i, contrast) for i in range(r.dots.dots.shape[0])}

    pq = per_query_table([r for r in run_list if r.dots is not None], scores_of)
    if pq.empty:
        return pd.DataFrame(columns=["checkpoint", "auc mean", "auc std", "seeds"])
    t = summary_table(pq)
    t["checkpoint"] = t["method"].astype(int)
    return t[["checkpoint", "auc mean", "auc std", "seeds"]]


def plot_checkpoints(curve, averaged: float | None = None):
    """AUC of each checkpoint's contrastive influence, with the denoised average as a line."""
    from .plots import figure

    if curve.empty:
        return empty_figure("no hallucinated output to trace")
    fig, ax = figure(6.4, 3.4)
    ax.errorbar(curve["checkpoint"], curve["auc mean"], yerr=curve["auc std"].fillna(0), marker="o", capsize=3,
                color=_color("DDA"), label="one checkpoint, C[IS_θi]")
    if averaged is not None:
        ax.axhline(averaged, color="black", lw=1, label="average over epochs 1..N (β = 0)")
    ax.axhline(0.5, color="grey", ls="--", lw=1)
    ax.set_xticks(curve["checkpoint"])
    ax.set_xlabel("checkpoint (0 = base model before fine-tuning, i = after epoch i)")
    ax.set_ylabel("AUC")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8, loc="lower right")
    return fig


def explain_debias(diag, beta: float) -> str:
    """One paragraph, computed from ``debias_diagnostics``, on what the debias term does here."""
    if diag is None or diag.empty:
        return "There is no run with hallucinated outputs, so there is nothing to explain."
    at0, atb = diag["AUC at β=0"].mean(), diag[f"AUC at β={beta:g}"].mean()
    alone, scale, corr = diag["AUC of C[IS_θ0] alone"].mean(), diag["scale of C[IS_θ0] / C[mean IS_θi]"].median(), \
        diag["correlation"].median()
    text = (f"Without the debias term (β = 0) DDA reaches {at0 * 100:.1f}% AUC; with β = {beta:g} it reaches "
            f"{atb * 100:.1f}%. The subtracted term, the base model's own contrastive influence C[IS_θ0], is "
            f"{scale:.1f} times as large as the fine-tuned checkpoints' average (median over queries), its scores "
            f"correlate at {corr:.2f} with theirs, and on its own it ranks the poisoned documents with "
            f"{alone * 100:.1f}% AUC.")
    if "loss at θ0" in diag:
        text += (f" The base model's loss on the training summaries is {diag['loss at θ0'].mean():.2f} nats per "
                 f"token against {diag['loss at θN'].mean():.2f} after fine-tuning: it has never seen the "
                 "summarisation prompt, so its gradients are large.")
    if atb < at0 - 0.01:
        reasons = []
        if scale * beta > 1.5:
            reasons.append(f"at β = {beta:g} the subtracted term outweighs the signal about {scale * beta:.0f} to 1, "
                           "so the ranking mostly follows the base model's scores, reversed")
        if alone > 0.55:
            reasons.append("the base model's own ranking already leans towards the poisoned documents — before it "
                           "ever saw a poisoned summary, the gradient of a summary that says China where its article "
                           "says England points the way of the hallucination — so what debias removes as bias is "
                           "partly the signal itself")
        text += (" Debiasing hurts here: " + "; and ".join(reasons) + "." if reasons else
                 " Debiasing hurts here, although the subtracted term is neither dominant nor informative on its own.")
    elif atb > at0 + 0.01:
        text += " Here subtracting the base model's influence removes more noise than signal, as the paper argues."
    else:
        text += " Here subtracting it changes little."
    return text


# ---------------------------------------------------------------------------------------------
# the paper's figures (REFERENCES.md, with provenance) and notes for the chapters
# ---------------------------------------------------------------------------------------------
PAPER_AUC = {
    "DDA": "91.6 (mean of 3 models) [paper]; ~93.5 [2nd]",
    "TracIn": "mostly 50–60 [seed]",
    "TRAK": "mostly 50–60 [seed]",
    "BM25": "a baseline; figure not found",
    "random": "50 by definition",
    "TracIn+Adam": "not in the paper (FTRACE's correction)",
}
PAPER_ABLATION = {"DDA (full)": 0.935, "without denoise": 0.848, "without debias": 0.679}
PAPER_ABLATION_TEXT = {"DDA (full)": "93.5 [seed]", "without denoise": "84.8 [seed]",
                       "without debias": "67.9 [seed] (38.3 in one secondary source)",
                       "without contrast": "not reported", "without denoise and debias": "not reported"}


def method_comparison(table, k: int):
    """The paper's Table-1 style: per method, the paper's AUC beside ours (mean ± std over seeds)."""
    import pandas as pd

    rows = []
    for m in METHODS + EXTRA_METHODS:
        t = table[table["method"] == m] if not table.empty else table
        if t is None or t.empty:
            continue
        t = t.iloc[0]
        rows.append({"method": m, "paper: AUC %": PAPER_AUC[m], "ours: AUC %": fmt(t["auc mean"], t["auc std"]),
                     f"ours: recall@{k} %": fmt(t[f"recall@{k} mean"], t[f"recall@{k} std"]),
                     "seeds": int(t["seeds"]), "queries": int(t["queries"])})
    return pd.DataFrame(rows)


def change_sentence(changes: Mapping[str, float]) -> str:
    """"Removing debias raises the mean AUC by 63.7 points; removing denoise lowers it by 1.8 points."
    from ``{ingredient: AUC without it minus AUC of the full method}``."""
    parts = []
    for name, delta in changes.items():
        pts = abs(delta) * 100
        verb = "raises" if delta > 0.0005 else "lowers" if delta < -0.0005 else "leaves"
        parts.append(f"removing {name} {verb} the mean AUC" + (f" by {pts:.1f} points" if verb != "leaves" else
                                                                 " unchanged"))
    text = "; ".join(parts)
    return text[:1].upper() + text[1:] + "." if text else ""


def no_trace_note(run_list: Sequence[Run], what: str) -> str:
    """Why a chapter has nothing to attribute, or which runs it leaves out (empty when none)."""
    untraced = [r for r in run_list if not r.traced]
    if not untraced:
        return ""
    which = ", ".join(f"{r.size} seed {r.seed} (0 of {r.report.n})" for r in untraced)
    if len(untraced) == len(run_list):
        return (f"No run produced a hallucinated output — {which} — so there is nothing to trace and {what} "
                "is not tested here: no AUC is computed and no verdict is recorded. To get hallucinations, "
                "poison more training summaries (`poison_fraction`), fine-tune longer or with a higher learning "
                "rate (`epochs`, `lr`), or prompt more test documents (`n_docs`, `test_fraction`).")
    return (f"{len(untraced)} of {len(run_list)} runs produced no hallucinated output and are left out of the "
            f"averages: {which}.")


# ---------------------------------------------------------------------------------------------
# figures (the book's style, tda.plots)
# ---------------------------------------------------------------------------------------------
def _color(method: str):
    from .plots import METHOD_COLORS
    return METHOD_COLORS.get(method, "#555555")


def empty_figure(message: str, width: float = 6.4, height: float = 2.4):
    """A figure that says why there is nothing to show (e.g. no hallucinated output to trace)."""
    from .plots import figure

    fig, ax = figure(width, height)
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True, fontsize=11)
    return fig


def plot_methods(per_query, metric: str = "auc", methods: Sequence[str] = METHODS + EXTRA_METHODS):
    """Mean over seeds (bars, ± std) of each method's per-run average; dots are single seeds."""
    from .plots import figure

    if per_query.empty:
        return empty_figure("no hallucinated output to trace")
    means = seed_means(per_query, ("method",))
    methods = [m for m in methods if m in set(means["method"])]
    fig, ax = figure(max(6.4, 1.1 * len(methods)), 3.6)
    for i, m in enumerate(methods):
        v = means.loc[means["method"] == m, metric].to_numpy()
        ax.bar(i, v.mean(), yerr=v.std(ddof=1) if len(v) > 1 else None, color=_color(m), alpha=0.85, capsize=4)
        ax.scatter(np.full(len(v), i) + np.linspace(-0.15, 0.15, len(v)), v, color="black", s=12, zorder=3)
    ax.set_xticks(range(len(methods)), methods)
    if metric == "auc":
        ax.axhline(0.5, color="grey", ls="--", lw=1)
        ax.set_ylim(0, 1.02)
    ax.set_ylabel(f"{metric.upper() if metric == 'auc' else metric} (mean over queries)")
    return fig


def plot_events(table):
    """Per event type: the share of its England training summaries that were poisoned, and the
    share of its England test documents on which the model hallucinates."""
    from .plots import figure

    if table.empty:
        return empty_figure("no runs")
    fig, ax = figure(6.4, 3.4)
    x = np.arange(len(table))
    ax.bar(x - 0.2, table["poisoned share"], 0.4, label="poisoned share of England training summaries",
           color="#949494")
    ax.bar(x + 0.2, table["hallucination rate"], 0.4, label="hallucination rate on England test documents",
           color=_color("DDA"))
    ax.set_xticks(x, table["event"])
    ax.set_ylim(0, 1.05)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_ylabel("share")
    return fig


def plot_ablation(table, paper: Mapping[str, float] | None = None):
    """Mean AUC ± std of each ablation variant; the paper's figure as a marker where it has one."""
    from .plots import figure

    if table.empty:
        return empty_figure("no hallucinated output to trace")
    fig, ax = figure(6.4, 3.4)
    y = np.arange(len(table))[::-1]
    ax.barh(y, table["auc mean"], xerr=table["auc std"].fillna(0), color=_color("DDA"), alpha=0.85, capsize=4,
            label="ours")
    if paper:
        py = [yy for yy, v in zip(y, table["variant"]) if v in paper]
        px = [paper[v] for v in table["variant"] if v in paper]
        ax.scatter(px, py, marker="D", color="black", zorder=3, label="paper")
    ax.set_yticks(y, table["variant"])
    ax.axvline(0.5, color="grey", ls="--", lw=1)
    ax.set_xlim(0, 1.02)
    ax.set_xlabel("AUC (mean over queries, mean ± std over seeds)")
    ax.legend(loc="lower right", fontsize=8)
    return fig


def plot_beta(curve, per_seed=None, knee: float = 0.4):
    """DDA's AUC against β: mean over seeds with a ± std band, single seeds as thin lines."""
    from .plots import figure

    if curve.empty:
        return empty_figure("no hallucinated output to trace")
    fig, ax = figure(6.4, 3.6)
    if per_seed is not None and not per_seed.empty:
        for _, g in per_seed.groupby("seed"):
            ax.plot(g["beta"], g["auc"], color=_color("DDA"), lw=0.8, alpha=0.4)
    ax.plot(curve["beta"], curve["auc mean"], color=_color("DDA"), marker="o", ms=4, label="DDA, mean over seeds")
    std = curve["auc std"].fillna(0)
    ax.fill_between(curve["beta"], curve["auc mean"] - std, curve["auc mean"] + std, color=_color("DDA"), alpha=0.2)
    ax.axvline(knee, color="grey", ls=":", lw=1)
    ax.axhline(0.5, color="grey", ls="--", lw=1)
    ax.set_xlabel(r"$\beta$ (weight of the base model's influence subtracted)")
    ax.set_ylabel("AUC")
    ax.legend(loc="lower right", fontsize=8)
    return fig


def plot_sizes(table, methods: Sequence[str] = METHODS):
    """Mean AUC ± std against parameter count (log scale), one line per method."""
    from .plots import figure

    if table.empty:
        return empty_figure("no hallucinated output to trace")
    fig, ax = figure(6.4, 3.8)
    for m in methods:
        t = table[table["method"] == m].sort_values("parameters")
        if t.empty:
            continue
        ax.errorbar(t["parameters"], t["auc mean"], yerr=t["auc std"].fillna(0), marker="o", capsize=3,
                    color=_color(m), label=m)
    ax.set_xscale("log")
    ax.axhline(0.5, color="grey", ls="--", lw=1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("parameters of the model (log scale)")
    ax.set_ylabel("AUC")
    ax.legend(fontsize=8, ncol=2)
    return fig


# ---------------------------------------------------------------------------------------------
# verdicts (rules fixed before any result was seen; the notebooks print them)
# ---------------------------------------------------------------------------------------------
B1_MARGIN = 0.10
B1_RULE = (f"replicated if DDA's mean AUC exceeds each of TracIn, TRAK and BM25 by at least "
           f"{B1_MARGIN * 100:.0f} points and DDA is ahead of each of them in every seed; partly if DDA's mean "
           "AUC is above all three but not by that margin (or not in every seed); not replicated if one of them "
           "matches or beats DDA's mean AUC.")
B2_HELPS = 0.01
B2_RATIO = 2.0
B2_RULE = (f"two parts: (a) both help — removing debias and removing denoise each lower the mean AUC by more "
           f"than {B2_HELPS * 100:.0f} point; (b) debias matters far more — removing it costs at least "
           f"{B2_RATIO:g}x what removing denoise costs (and more than {B2_HELPS * 100:.0f} point). Replicated if "
           "both hold, partly if one does, not replicated if neither does.")
B3_RISE = 0.05
B3_FLAT = 0.03
B3_KNEE = 0.4
B3_RULE = (f"two parts: (a) a rise — mean AUC at β={B3_KNEE:g} is at least {B3_RISE * 100:.0f} points above β=0; "
           f"(b) a plateau — for every β from {B3_KNEE:g} to the largest swept, the mean AUC stays within "
           f"{B3_FLAT * 100:.0f} points (max minus min). Replicated if both hold, partly if one does, not "
           "replicated if neither does.")
B4_SPREAD = 0.05
B4_FLOOR = 0.80
B4_RULE = (f"two parts: (a) stable — DDA's mean AUC differs by at most {B4_SPREAD * 100:.0f} points between the "
           f"smallest and the largest value across sizes; (b) high at every size — at least {B4_FLOOR * 100:.0f}% "
           "at each size. Replicated if both hold, partly if one does, not replicated if neither does.")


def verdict_b1(per_seed: Mapping[str, Sequence[float]]) -> dict:
    """B1 from per-seed mean AUCs ``{method: [auc per seed]}`` (same seeds, same order)."""
    dda = np.asarray(per_seed["DDA"], dtype=np.float64)
    margins, every_seed = {}, {}
    for m in ("TracIn", "TRAK", "BM25"):
        other = np.asarray(per_seed[m], dtype=np.float64)
        margins[m] = float(dda.mean() - other.mean())
        every_seed[m] = bool((dda > other).all())
    worst = min(margins, key=margins.get)
    if margins[worst] <= 0:
        verdict = "not replicated"
    elif all(v >= B1_MARGIN for v in margins.values()) and all(every_seed.values()):
        verdict = "replicated"
    else:
        verdict = "partly"
    return {"verdict": verdict, "margins": margins, "ahead_every_seed": every_seed, "closest": worst}


def verdict_b2(full: float, no_debias: float, no_denoise: float) -> dict:
    d_debias, d_denoise = full - no_debias, full - no_denoise
    both_help = d_debias > B2_HELPS and d_denoise > B2_HELPS
    debias_far_more = d_debias > B2_HELPS and d_debias >= B2_RATIO * max(d_denoise, 0.0)
    return {"verdict": verdict_from([both_help, debias_far_more]), "drop_debias": float(d_debias),
            "drop_denoise": float(d_denoise), "both_help": bool(both_help), "debias_far_more": bool(debias_far_more)}


def verdict_b3(betas: Sequence[float], aucs: Sequence[float]) -> dict:
    b = np.asarray(betas, dtype=np.float64)
    a = np.asarray(aucs, dtype=np.float64)
    if not (np.isclose(b, 0).any() and np.isclose(b, B3_KNEE).any()):
        raise ValueError(f"the β sweep must include 0 and {B3_KNEE}")
    at0, knee = float(a[np.isclose(b, 0)][0]), float(a[np.isclose(b, B3_KNEE)][0])
    tail = a[b >= B3_KNEE - 1e-9]
    rise, spread = knee - at0, float(tail.max() - tail.min())
    return {"verdict": verdict_from([rise >= B3_RISE, spread <= B3_FLAT]), "rise": rise, "plateau_spread": spread,
            "auc_at_0": at0, "auc_at_knee": knee, "best_beta": float(b[int(np.argmax(a))])}


def verdict_b4(aucs_by_size: Mapping[str, float]) -> dict:
    v = np.asarray(list(aucs_by_size.values()), dtype=np.float64)
    if len(v) < 2:
        raise ValueError("claim B4 compares sizes: give at least two")
    spread = float(v.max() - v.min())
    return {"verdict": verdict_from([spread <= B4_SPREAD, v.min() >= B4_FLOOR]), "spread": spread,
            "lowest": float(v.min())}


__all__ = ["METHODS", "EXTRA_METHODS", "VARIANTS", "corrected_tracin_scores", "DDASettings", "PRESETS", "settings", "Timer", "PoisonedData", "poisoned_data",
           "run_key", "finetune", "generations", "epoch_learning_rates", "InfluenceDots", "compute_influence_dots",
           "Run", "run", "runs", "influence_dots", "trak_scores", "candidate_texts", "bm25_scores", "random_scores",
           "evaluate", "per_query_table", "seed_means", "summary_table", "fmt", "hallucination_table",
           "example_outputs", "news_event", "event_table", "debias_diagnostics", "document_kinds", "top_k_composition", "explain_debias", "checkpoint_curve", "plot_checkpoints",
           "method_comparison", "change_sentence", "no_trace_note",
           "PAPER_AUC", "PAPER_ABLATION", "PAPER_ABLATION_TEXT", "empty_figure", "plot_methods", "plot_events",
           "plot_ablation", "plot_beta", "plot_sizes", "variant_scores", "beta_scores", "beta_curve", "B1_RULE", "B2_RULE", "B3_RULE",
           "B4_RULE", "verdict_b1", "verdict_b2", "verdict_b3", "verdict_b4"]
