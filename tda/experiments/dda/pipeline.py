"""Part II's pipeline: DDA (Wu et al. 2024) on the small world, from poisoning to every method's scores.

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
example (``tda.methods.dda.InfluenceDots``). Every DDA variant is then a linear combination of
stored numbers::

    DDA(β; denoise, contrast) = C[ mean_{i=1..N} IS_θi  (or IS_θN without denoise)  -  β IS_θ0 ]
    C[S] = S(hallucinated) - S(correct)        (or S(hallucinated) without contrast)

and TracIn (Pruthi et al.) is ``sum_i η_i IS_θi(hallucinated)`` with ``η_i`` the mean learning
rate of epoch ``i``. So the ablation and the β sweep cost no gradient (``analysis``).

Settings (written down before any AUC was computed): the dataclass defaults below, and each
world's in ``notebooks/params.yml`` (section ``worlds``, with the measurements behind them):

- data: ``synthetic_news`` with a quarter of the documents about England, a quarter held out;
  40% of the England training summaries poisoned. Found by the engineer who wrote
  ``tda.data.xsum`` (with earlier base models): at 20–30% the tiny model hallucinated on 0–5% of
  test prompts, at 40% on roughly a third; with a constant learning rate the rate swung from epoch
  to epoch, with a linear decay it settled. How many documents and epochs: see params.yml.
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
- metrics (``analysis``): ROC AUC of each query's ranking of all training documents (ties count
  half), averaged over the queries of a run, then mean ± std over seeds; recall@k likewise.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ...base import load_base, pretrain_config, world_params
from ...checkpoints import list_checkpoints, load_checkpoint, read_state, run_problems
from ...data.xsum import documents_naming, poison, synthetic_news, to_examples
from ...hallucination import HallucinationReport, NoHallucinationsError, build_queries, find_hallucinations
from ...methods import bm25, random_scores, tracin, trak
from ...methods.dda import InfluenceDots, check_beta, influence_dots
from ...models import parameter_count
from ...params import unknown_settings, world_settings
from ...progress import Timer
from ...seeds import derive_seed
from ...store import text_digest
from ...train import BATCH_ORDER, TrainConfig, learning_rate, train

METHODS = ("DDA", "TracIn", "TRAK", "BM25", "random")
# Beyond the paper (not part of any verdict): TracIn with FTRACE's optimizer correction, i.e. every
# gradient divided by sqrt(AdamW's second moment) + 1e-7 at its checkpoint, as FTRACE's code does.
EXTRA_METHODS = ("TracIn+Adam",)
FORMAT = 1  # bump when what a stored artifact of this module holds changes


# ---------------------------------------------------------------------------------------------
# settings
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DDASettings:
    """Everything that defines a run besides the world, the model size and the seed (defaults: the
    default world's)."""

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
        check_beta(self.beta, "DDA setting beta")
        if self.trak_dim < 1:
            raise ValueError(f"trak_dim must be >= 1, got {self.trak_dim}")
        ks = tuple(int(k) for k in self.recall_ks)
        if not ks or min(ks) < 1:
            raise ValueError(f"recall_ks must be positive integers, got {self.recall_ks}")
        object.__setattr__(self, "recall_ks", ks)
        if self.pretrain is not None:
            object.__setattr__(self, "pretrain", dict(self.pretrain))

    @classmethod
    def for_world(cls, world: str, overrides: Mapping | None = None) -> "DDASettings":
        """The settings a world of params.yml gives Part II, with single settings overridden.

        An unknown world or setting is an error that names the known ones. A layer (the world's
        settings, then ``overrides``) that sets one of ``poison_fraction`` and ``n_poison`` unsets
        the other."""
        known = [f.name for f in fields(cls)]
        named = world_settings(world, "dda")
        unknown_settings(named, known, f"DDA settings in params.yml (world {world!r})")
        overrides = dict(overrides or {})
        unknown_settings(overrides, known, "DDA settings")
        merged: dict = {}
        for layer in (named, overrides):
            layer = dict(layer)
            if "n_poison" in layer and "poison_fraction" not in layer:
                layer["poison_fraction"] = None
            if "poison_fraction" in layer and "n_poison" not in layer:
                layer["n_poison"] = None
            merged.update(layer)
        return cls(**merged)

    def train_config(self, seed: int) -> TrainConfig:
        return TrainConfig(epochs=self.epochs, lr=self.lr, batch_size=self.batch_size,
                           schedule=self.schedule, seed=seed)


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
    data = data if data is not None else poisoned_data(setup, s, seed)
    data_fields = ("n_docs", "target_share", "test_fraction", "source_word", "target_word", "poison_fraction",
                   "n_poison")
    return {**world_params(setup.world_config), "size": size, "pretrain": asdict(pretrain_config(setup, size, s.pretrain)),
            "data": {k: getattr(s, k) for k in data_fields}, "seed": seed,
            "train_digest": text_digest(list(data.train["summary"]) + list(data.train["document"])),
            "train": asdict(s.train_config(seed)), "format": FORMAT, "batch_order": BATCH_ORDER}


def finetune_poisoned(setup, s: DDASettings, size: str, seed: int, data: PoisonedData | None = None) -> Path:
    """The poisoned fine-tuning run (checkpoint + AdamW state per epoch; ``epoch-000`` is the base
    model θ0), from the store if it is there."""
    data = data if data is not None else poisoned_data(setup, s, seed)

    def build(work: Path) -> None:
        model, tokenizer = load_base(setup, size, s.pretrain)
        train(model, tokenizer, setup.task(), to_examples(data.train), work, s.train_config(seed),
              desc=f"fine-tune {size} on poisoned news (seed {seed})")

    return setup.store.get_or_create("dda-finetune", run_key(setup, s, size, seed, data), build, resumable=True,
                                     check=run_problems)


def generations(setup, s: DDASettings, size: str, seed: int, data: PoisonedData | None = None):
    """The greedy summaries of the England test documents by the final checkpoint, classified
    (a ``tda.hallucination.HallucinationReport``), from the store if there."""
    data = data if data is not None else poisoned_data(setup, s, seed)
    run_dir = finetune_poisoned(setup, s, size, seed, data)
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
    steps = math.ceil(n_examples / config.batch_size)
    total = steps * config.epochs
    return np.array([np.mean([learning_rate(config, e * steps + j, total) for j in range(steps)])
                     for e in range(config.epochs)])


# ---------------------------------------------------------------------------------------------
# a run
# ---------------------------------------------------------------------------------------------
@dataclass
class DDARun:
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
        methods: Sequence[str] = METHODS) -> DDARun:
    """Everything of one run, each expensive stage from the store when it is there.

    When no output hallucinates the run is returned with ``queries=None`` and no scores (the
    notebooks count such runs and say so); nothing is raised.
    """
    unknown = sorted(set(methods) - set(METHODS) - set(EXTRA_METHODS))
    if unknown:
        raise ValueError(f"unknown methods {unknown}; known: {list(METHODS + EXTRA_METHODS)}")
    timer = timer or Timer()
    if verbose:
        print(f"{size}, seed {seed}:", flush=True)
    data = poisoned_data(setup, s, seed)
    with timer(f"fine-tune {size}", verbose):
        run_dir = finetune_poisoned(setup, s, size, seed, data)
    ckpts = list_checkpoints(run_dir)
    state = read_state(ckpts[-1])
    with timer(f"generate {size}", verbose):
        report = generations(setup, s, size, seed, data)
    try:
        queries = build_queries(report)
    except NoHallucinationsError:
        queries = None
    model, _ = load_checkpoint(ckpts[-1])
    out = DDARun(size=size, seed=seed, settings=s, data=data, run_dir=run_dir, report=report, queries=queries,
              epoch_losses=list(state["epoch_losses"]), n_parameters=parameter_count(model))
    if verbose:
        print(f"  {data.report.n_poisoned} of {data.report.n_candidates} {s.source_word} summaries poisoned; "
              f"{report.n_hallucinated} of {report.n} test summaries hallucinate ({report.rate:.0%})", flush=True)
    if queries is None:
        return out
    if any(m in methods for m in ("DDA", "TracIn")):
        with timer(f"gradients {size} (DDA, TracIn)", verbose):
            out.dots = stored_influence_dots(setup, s, size, seed, data, queries, ckpts, verbose)
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
            out.scores["BM25"] = bm25_over_documents(queries, data.train)
    if "random" in methods:
        out.scores["random"] = random_scores(range(len(queries)), range(len(data.train)),
                                               seed=derive_seed(seed, "random"))
    return out


def _query_key(setup, s, size, seed, data, queries) -> dict:
    return {**run_key(setup, s, size, seed, data), "max_new_tokens": s.max_new_tokens, "decoding": "greedy",
            "queries": text_digest(list(queries.prompts) + list(queries.hallucinated) + list(queries.correct))}


def stored_influence_dots(setup, s: DDASettings, size: str, seed: int, data: PoisonedData, queries, checkpoints,
                          verbose: bool = True) -> InfluenceDots:
    """The run's ``tda.methods.dda.InfluenceDots`` (θ0 = ``checkpoints[0]``, then every epoch), from
    the store if there."""
    key = {**_query_key(setup, s, size, seed, data, queries), "group": s.group}
    weights = epoch_learning_rates(s.train_config(seed), len(data.train))

    def build(work: Path) -> None:
        d = influence_dots(checkpoints[0], checkpoints[1:], setup.task(), queries.hallucinated_examples(),
                           queries.correct_examples(), to_examples(data.train), group=s.group,
                           batch_size=s.grad_batch_size, lr_weights=weights, work=work, verbose=verbose)
        d.save(work)
        for p in work.glob("dots-*.npy"):
            p.unlink()

    return InfluenceDots.load(setup.store.get_or_create("dda-dots", key, build, resumable=True))


def trak_scores(setup, s: DDASettings, size: str, seed: int, data: PoisonedData, queries, checkpoint) -> np.ndarray:
    """TRAK at the final checkpoint (see the module docstring), from the store if there."""
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


def bm25_over_documents(queries, train) -> np.ndarray:
    """BM25Plus of each hallucinated summary against every training document (module docstring)."""
    return bm25(list(queries.hallucinated), candidate_texts(train))


def runs(setup, s: DDASettings, sizes: Sequence[str], seeds: Sequence[int], timer: Timer | None = None,
         verbose: bool = True, methods: Sequence[str] = METHODS) -> list[DDARun]:
    """:func:`run` for every size and seed."""
    timer = timer or Timer()
    return [run(setup, s, size, seed, timer, verbose, methods) for size in sizes for seed in seeds]


__all__ = ["METHODS", "EXTRA_METHODS", "FORMAT", "DDASettings", "PoisonedData", "poisoned_data", "run_key",
           "finetune_poisoned", "generations", "epoch_learning_rates", "DDARun", "run", "runs", "stored_influence_dots",
           "trak_scores", "corrected_tracin_scores", "candidate_texts", "bm25_over_documents"]
