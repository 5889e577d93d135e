"""Part I's experiments: FTRACE on the small world, from fine-tuning to per-query MRR.

One *run* is a dataset (the TREx analogue or SYNTH), a seed, and everything the seed decides: the
query sample (and, for SYNTH, the facts), the fine-tuning run of the base model on the attribution
set, the query slices, the candidate sets and every method's scores. The notebooks of Part I only
choose settings, call :func:`prepare` and the score functions, and tabulate.

Pipeline of one run (each expensive step is an artifact in the store, keyed by all its parameters,
so the five chapters share them: whichever notebook runs first pays, the others read)::

    build_data ──> finetune (checkpoint + AdamW state per epoch) ──> query slices
        │                                                             │
        └────────────> candidate sets of the attributed queries <────┘
                          │
          BM25 · TracIn parts (per checkpoint x parameter unit x correction) · EMBED parts (per layer)
                          │
              per-query scores over each query's candidates ──> tda.metrics ──> MRR, P@10, R@10

TracIn is stored *decomposed*: for every checkpoint, every parameter unit (the input embedding,
each transformer block, the head, the rest) and with or without AdamW's correction, the dot
products of query and candidate gradients and both squared norms. Every TracIn variant the chapters
need — all parameters or one layer, one checkpoint or the mean of several, cosine or dot, corrected
or not — is then an exact sum of stored numbers (``tracin_scores``), and the tests check that it
equals ``tda.methods.tracin`` computed from scratch.

Settings (written down before any method's result was looked at; the reasons are in
``PRESETS``' comments and in the methods chapter):

- model: the ``tiny`` base model (2 blocks, d=64). On 2 shared CPU cores, per-example gradients at
  8 checkpoints over ~3,000 candidates per run are the cost that decides the budget, and tiny is
  ~5x cheaper than ``small``.
- fine-tuning: the base models' own recipe (AdamW, lr 5e-3, 50 warm-up steps then linear decay,
  batch 16) for 10 epochs (TREx analogue) or 20 (SYNTH), on the whole attribution set (as the paper
  fine-tunes on FTRACE's abstracts).
- TracIn's checkpoints: ``n_checkpoints`` evenly spaced epochs of the fine-tuning run (the last
  included), and as many of the base model's pre-training epochs (epoch-000, the random
  initialisation, is never used).
- queries: TREx samples ``n_queries`` facts (half known to the base model), computes the slices,
  and attributes at most ``max_learned`` / ``max_known`` / ``max_other`` of the learned / known /
  remaining slices; SYNTH attributes every query.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from .data import ftrace as ft
from .progress import Timer
from .results import fmt, verdict_from
from .store import text_digest

DATASETS = ("trex", "synth")
SLICES = ("learned", "known", "other")
METRICS = ("mrr", "precision@10", "recall@10")
# The paper's configuration of each method in the main comparison (see the methods chapter):
MAIN_TRACIN = {"units": "embedding", "similarity": "cosine", "corrected": True}
MAIN_EMBED = {"layers": [0], "pooling": "tokens"}


# ---------------------------------------------------------------------------------------------
# settings
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FtraceSettings:
    """Everything that defines a run besides the world and the seed."""

    dataset: str = "trex"
    size: str = "tiny"  # base model size (tda.models.SIZES)
    pretrain: Mapping | None = None  # overrides of the base model's pre-training (tda.base.pretrain_config)
    # data
    n_queries: int = 200  # TREx: facts sampled as queries; SYNTH: query facts (one query per mask each)
    known_share: float = 0.5  # TREx: share of sampled facts the base model read in pre-training
    synth_facts: int = 40  # SYNTH: facts in the attribution set
    synth_entities: int | None = None  # SYNTH: entities 1..n (None: the paper's slot density, see synth_entity_count)
    relations: tuple[str, ...] | None = None  # None: every relation of the world
    # which queries are attributed (None = all of that slice)
    max_learned: int | None = 40
    max_known: int | None = 15
    max_other: int | None = 15
    on_missing: str = "error"  # a query without proponent: "error" or "skip" (counted)
    # candidate sets (paper: k=100..250, m=100, r=100 over 1.5M abstracts)
    k: int = 20
    m: int = 20
    r: int = 20
    # fine-tuning
    epochs: int = 8
    lr: float = 5e-3
    batch_size: int = 16
    schedule: str = "linear"
    warmup_steps: int = 50
    # attribution
    n_checkpoints: int = 4
    grad_batch_size: int = 64

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {DATASETS}, got {self.dataset!r}")
        if self.on_missing not in ("error", "skip"):
            raise ValueError(f"on_missing must be 'error' or 'skip', got {self.on_missing!r}")
        if self.n_checkpoints < 1:
            raise ValueError(f"n_checkpoints must be >= 1, got {self.n_checkpoints}")
        if self.relations is not None:
            object.__setattr__(self, "relations", tuple(ft.check_relations(self.relations)))
        for name in ("max_learned", "max_known", "max_other"):
            v = getattr(self, name)
            if v is not None and v < 0:
                raise ValueError(f"{name} must be >= 0 or None, got {v}")

    def train_config(self, seed: int):
        from .train import TrainConfig
        return TrainConfig(epochs=self.epochs, lr=self.lr, batch_size=self.batch_size,
                           schedule=self.schedule, warmup_steps=self.warmup_steps, seed=seed)


# Per world preset and dataset. Fixed before any method was scored (one exception, said below), for two reasons:
# - time: Part I must run in minutes on 2 CPU cores. The cost is per-example gradients at
#   2 x n_checkpoints checkpoints over the union of the candidate sets (nearly the whole attribution
#   set), which sets the tiny model and at most 55 attributed TREx queries (30 learned, 15 known,
#   10 other). Candidate sets: the paper's k=m=r=100 (TREx: <= 306 candidates, 6 proponents; SYNTH:
#   124 proponents among ~420). A first default run with TREx sets of k=m=r=25 (chosen for time) put
#   every method at MRR >= 0.95, too close to the ceiling to tell methods apart, so the default uses
#   the paper's sizes (the verdict rules did not change); the quick profile keeps 25. SYNTH keeps
#   the paper's density of facts per entity (``synth_entity_count``): drawn over all of the world's
#   entity numbers, an entity would occur in less than one fact, and its name alone would give
#   every proponent away.
# - learning: fine-tuning uses the recipe with which the base models learn their facts (AdamW,
#   lr 5e-3, batch 16, 50 warm-up steps, linear decay). Measured on the quick world (seed 0),
#   10 epochs teach the tiny model 71% of the TREx-analogue facts it did not know (judged on the
#   query template, which it never trains on); on SYNTH the training loss still fell steeply at
#   10 epochs (0.41) and flattened by 20 (0.26), so SYNTH gets 20.
# - checkpoints: 4 of each kind, as the paper (3 in the quick profile).
# - the quick profile (classroom/CI, whole of Part I in about 2 minutes) scales everything down and
#   gives SYNTH 12 epochs: its numbers show the method, not the replication.
PRESETS: dict[str, dict[str, FtraceSettings]] = {
    "quick": {
        "trex": FtraceSettings(dataset="trex", n_queries=120, max_learned=15, max_known=8, max_other=7,
                               k=25, m=25, r=25, epochs=10, n_checkpoints=3),
        "synth": FtraceSettings(dataset="synth", n_queries=8, synth_facts=24, max_learned=None,
                                max_known=None, max_other=None, k=100, m=100, r=100, epochs=12, n_checkpoints=3),
    },
    "default": {
        "trex": FtraceSettings(dataset="trex", n_queries=200, max_learned=30, max_known=15, max_other=10,
                               k=100, m=100, r=100, epochs=10, n_checkpoints=4),
        "synth": FtraceSettings(dataset="synth", n_queries=20, synth_facts=40, max_learned=None,
                                max_known=None, max_other=None, k=100, m=100, r=100, epochs=20, n_checkpoints=4),
    },
}


def settings(world: str, dataset: str, overrides: Mapping | None = None) -> FtraceSettings:
    """The preset settings of a dataset for a world preset, with single settings overridden."""
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")
    base = PRESETS.get(world, PRESETS["default"])[dataset]
    overrides = dict(overrides or {})
    known = {f.name for f in fields(FtraceSettings)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown FTRACE settings {unknown}; known: {sorted(known)}")
    if "dataset" in overrides and overrides["dataset"] != dataset:
        raise ValueError("the dataset is chosen by the argument, not by an override")
    if overrides.get("relations") is not None:
        overrides["relations"] = tuple(overrides["relations"])
    if overrides.get("pretrain") is not None:
        overrides["pretrain"] = dict(overrides["pretrain"])
    return replace(base, **overrides)


# ---------------------------------------------------------------------------------------------
# data and fine-tuning
# ---------------------------------------------------------------------------------------------
# The paper's SYNTH draws 50,000 facts over 5,000 entities and 37 relations: a (relation, subject)
# slot is taken with probability 50,000 / (37 x 5,000) = 0.27. Scaled down, we keep that density.
SYNTH_SLOT_DENSITY = 50_000 / (37 * 5_000)


def synth_entity_count(s: FtraceSettings, world=None) -> int:
    """SYNTH's number of entities: ``s.synth_entities``, or the paper's slot density
    (facts / (density x relations)), at least 4 and at most the world's vocabulary."""
    if s.synth_entities is not None:
        return int(s.synth_entities)
    n_rel = len(s.relations) if s.relations else len(ft.check_relations(None))
    n = max(4, int(round(s.synth_facts / (SYNTH_SLOT_DENSITY * n_rel))))
    return min(n, world.config.n_synth_entities) if world is not None else n


def build_data(world, s: FtraceSettings, seed: int) -> ft.FtraceData:
    """The dataset of a run: the TREx analogue or SYNTH, its query sample decided by ``seed``."""
    if s.dataset == "trex":
        return ft.build_trex(world, n_queries=s.n_queries, known_share=s.known_share,
                             relations=s.relations, seed=seed)
    return ft.build_synth(world, n_facts=s.synth_facts, n_query_facts=s.n_queries, relations=s.relations,
                          n_entities=synth_entity_count(s, world), seed=seed)


def data_digest(data: ft.FtraceData) -> str:
    """A hash of a dataset's text (part of every store key, so other data never reuses an artifact)."""
    q, a = data
    return text_digest(list(q["inputs_pretokenized"]) + list(q["targets_pretokenized"]) +
                   list(a["inputs_pretokenized"]) + list(a["targets_pretokenized"]) + list(a["facts"]))


def pick_checkpoints(paths: Sequence[Path], n: int) -> list[Path]:
    """``n`` checkpoints evenly spaced over epochs 1..last (the last included; epoch-000 never).

    With fewer than ``n`` trained epochs, all of them.
    """
    trained = [p for p in paths if not Path(p).name.endswith("-000")]
    if not trained:
        raise ValueError(f"no trained checkpoint among {[Path(p).name for p in paths]}")
    if n >= len(trained):
        return list(trained)
    picks = sorted({int(round(x)) for x in np.linspace(len(trained) / n, len(trained), n)})
    return [trained[i - 1] for i in picks]


@dataclass
class Run:
    """One dataset x seed: the data, the fine-tuning run, the slices and the candidate sets."""

    setup: object  # tda.base.Setup
    settings: FtraceSettings
    seed: int
    data: ft.FtraceData
    finetune_dir: Path
    base_dir: Path
    slices: dict[str, list]  # per query row of data.queries
    query_rows: list[int]  # the attributed queries (rows of data.queries), in order
    query_slice: list[str]  # "learned" | "known" | "other", per attributed query
    candidates: ft.Candidates  # candidate sets of the attributed queries (rows of data.abstracts)
    key: dict = field(default_factory=dict)  # the store parameters every artifact of the run shares

    # -- checkpoints ---------------------------------------------------------------------------
    def finetune_checkpoints(self) -> list[Path]:
        from .train import list_checkpoints
        return pick_checkpoints(list_checkpoints(self.finetune_dir), self.settings.n_checkpoints)

    def pretrain_checkpoints(self) -> list[Path]:
        from .train import list_checkpoints
        return pick_checkpoints(list_checkpoints(self.base_dir), self.settings.n_checkpoints)

    def checkpoints(self, which: str) -> list[Path]:
        if which == "ft":
            return self.finetune_checkpoints()
        if which == "pt":
            return self.pretrain_checkpoints()
        raise ValueError(f"checkpoints are 'ft' (fine-tuning) or 'pt' (pre-training), got {which!r}")

    def final_model_dir(self) -> Path:
        from .train import list_checkpoints
        return list_checkpoints(self.finetune_dir)[-1]

    # -- examples ------------------------------------------------------------------------------
    @property
    def union(self) -> list[int]:
        """Every abstract row that is a candidate of some attributed query, ascending."""
        return sorted({c for cands in self.candidates.indices for c in cands})

    def query_examples(self):
        return ft.to_examples(self.data.queries.select(self.query_rows))

    def candidate_examples(self):
        return ft.to_examples(self.data.abstracts.select(self.union))

    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """(query position j, union column) of every (query, candidate) pair, query by query."""
        col = {c: i for i, c in enumerate(self.union)}
        qj = np.concatenate([np.full(len(c), j) for j, c in enumerate(self.candidates.indices)]).astype(np.int64)
        cc = np.asarray([col[c] for cands in self.candidates.indices for c in cands], dtype=np.int64)
        return qj, cc

    def split(self, flat: np.ndarray) -> list[np.ndarray]:
        """Per-pair values (in ``pairs()`` order) -> one array per attributed query."""
        sizes = np.cumsum([len(c) for c in self.candidates.indices])[:-1]
        return np.split(np.asarray(flat), sizes)

    def from_matrix(self, matrix: np.ndarray) -> list[np.ndarray]:
        """A ``[n_queries, len(union)]`` score matrix -> each query's scores over its candidates."""
        matrix = np.asarray(matrix)
        if matrix.shape != (len(self.query_rows), len(self.union)):
            raise ValueError(f"score matrix of shape {matrix.shape}, expected "
                             f"{(len(self.query_rows), len(self.union))} (queries x candidate union)")
        qj, cc = self.pairs()
        return self.split(matrix[qj, cc])

    def query_info(self):
        """One row per attributed query: slice, whether known in pre-training, losses, relation."""
        import pandas as pd
        q = self.data.queries
        rows = []
        for j, row in enumerate(self.query_rows):
            rows.append({
                "dataset": self.settings.dataset, "seed": self.seed, "query": j, "row": row,
                "uuid": q[row]["uuid"], "relation": q[row]["predicate_id"], "slice": self.query_slice[j],
                "in_pretraining": bool(q[row]["known"]) if "known" in q.column_names else False,
                "correct_before": self.slices["correct_before"][row],
                "correct_after": self.slices["correct_after"][row],
                "loss_before": self.slices["loss_before"][row], "loss_after": self.slices["loss_after"][row],
                "n_candidates": len(self.candidates.indices[j]), "n_proponents": len(q[row]["proponents"]),
            })
        return pd.DataFrame(rows)


def _finetune_key(setup, s: FtraceSettings, seed: int, data: ft.FtraceData) -> dict:
    """Everything a fine-tuning run depends on (and nothing else, so other settings can change)."""
    from .base import pretrain_config, world_params
    return {**world_params(setup.world_config), "size": s.size,
            "pretrain": asdict(pretrain_config(setup, s.size, s.pretrain)), "seed": seed,
            "data": data_digest(data), "train": asdict(s.train_config(seed)), "dataset": s.dataset}


def finetune(setup, s: FtraceSettings, seed: int, data: ft.FtraceData | None = None) -> Path:
    """The fine-tuning run of a dataset (checkpoint + AdamW state per epoch), from the store if there.

    Training data: the attribution set, as causal cloze examples (``to_examples``). The run starts
    from the fully pre-trained base model and uses the seed for its batch order.
    """
    from .base import base_checkpoints
    from .train import load_checkpoint, train

    data = data if data is not None else build_data(setup.world, s, seed)
    key = _finetune_key(setup, s, seed, data)

    def build(work: Path) -> None:
        model, tokenizer = load_checkpoint(base_checkpoints(setup, s.size, s.pretrain)[-1])
        train(model, tokenizer, setup.task(), ft.to_examples(data.abstracts), work, s.train_config(seed),
              desc=f"fine-tune {s.dataset} (seed {seed})")

    return setup.store.get_or_create("ftrace-finetune", key, build, resumable=True)


def select_queries(slices: Mapping[str, list], s: FtraceSettings, seed: int,
                   eligible: Sequence[bool] | None = None) -> tuple[list[int], list[str]]:
    """Which queries to attribute: up to ``max_*`` of each slice, a seeded sample, in row order.

    Slices: ``learned`` (wrong before fine-tuning, right after: the paper's slice), ``known`` (right
    before), ``other`` (wrong after). ``eligible`` (per row) leaves out queries that cannot be
    evaluated (no proponent, with ``on_missing="skip"``).
    """
    n = len(slices["correct_before"])
    names = []
    for before, learned in zip(slices["correct_before"], slices["learned"]):
        names.append("learned" if learned else "known" if before else "other")
    rng = random.Random(f"{seed}-ftrace-select")
    chosen: list[int] = []
    for name, cap in (("learned", s.max_learned), ("known", s.max_known), ("other", s.max_other)):
        rows = [i for i in range(n) if names[i] == name and (eligible is None or eligible[i])]
        chosen += rows if cap is None or cap >= len(rows) else rng.sample(rows, cap)
    chosen.sort()
    return chosen, [names[i] for i in chosen]


def prepare(setup, s: FtraceSettings, seed: int, timer: Timer | None = None, verbose: bool = True) -> Run:
    """Build (or load) everything of one run up to the candidate sets."""
    from .base import base_model_dir
    from .train import list_checkpoints, load_checkpoint

    timer = timer or Timer()
    with timer(f"data ({s.dataset})", verbose=False):
        data = build_data(setup.world, s, seed)
    with timer(f"base model ({s.size})", verbose=False):
        base_dir = base_model_dir(setup, s.size, s.pretrain)
    with timer(f"fine-tuning ({s.dataset})", verbose=False):
        ft_dir = finetune(setup, s, seed, data)
    # Later artifacts are keyed by the fine-tuning run's store key (a hash of everything it depends
    # on) and the data, so that settings which do not touch them never invalidate them.
    key = {"world": asdict(setup.world_config), "finetune": ft_dir.name, "base": base_dir.name, "seed": seed,
           "data": data_digest(data)}
    task = setup.task()

    def compute_slices():
        ckpts = list_checkpoints(ft_dir)
        before, _ = load_checkpoint(ckpts[0])
        after, _ = load_checkpoint(ckpts[-1])
        return ft.query_slices(data.queries, before, after, task)

    with timer(f"query slices ({s.dataset})", verbose=False):
        slices = setup.store.get_json("ftrace-slices", key, compute_slices)
    eligible = [len(p) > 0 for p in data.queries["proponents"]]
    missing = [i for i, e in enumerate(eligible) if not e]
    if missing and s.on_missing == "error":
        raise ValueError(f"{len(missing)} of {len(eligible)} queries have no proponent (first: row {missing[0]}); "
                         "their MRR would be 0 by construction. Use on_missing='skip' to drop and count them.")
    rows, names = select_queries(slices, s, seed, eligible)
    if not rows:
        raise ValueError(f"no query left to attribute in {s.dataset} (seed {seed}): every slice is empty or capped at 0")

    def compute_candidates():
        c = ft.candidate_sets(data.queries.select(rows), data.abstracts, k=s.k, m=s.m, r=s.r, seed=seed)
        return {"indices": c.indices}

    with timer(f"candidate sets ({s.dataset})", verbose=False):
        cj = setup.store.get_json("ftrace-candidates", {**key, "rows": rows, "k": s.k, "m": s.m, "r": s.r},
                                  compute_candidates)
    cands = ft.Candidates(query_rows=rows, indices=[list(map(int, c)) for c in cj["indices"]],
                          skipped=len(missing), skipped_rows=missing, params={"k": s.k, "m": s.m, "r": s.r})
    ft.check_candidates(cands, data.queries)
    run = Run(setup=setup, settings=s, seed=seed, data=data, finetune_dir=ft_dir, base_dir=base_dir,
              slices=slices, query_rows=rows, query_slice=names, candidates=cands, key=key)
    if verbose:
        counts = {n: names.count(n) for n in SLICES}
        print(f"{s.dataset} seed {seed}: {len(data.queries)} queries "
              f"({sum(slices['learned'])} learned, {sum(slices['correct_before'])} known before fine-tuning), "
              f"{len(data.abstracts)} abstracts; attributing {len(rows)} {counts}, "
              f"{len(run.union)} distinct candidates", flush=True)
    return run


# ---------------------------------------------------------------------------------------------
# scores: lexical and baselines
# ---------------------------------------------------------------------------------------------
def bm25_scores(run: Run) -> list[np.ndarray]:
    """BM25+ over the whole attribution set (its IDF), read off at each query's candidates."""
    from .methods import bm25

    q = run.data.queries.select(run.query_rows)
    a = run.data.abstracts
    qt = [ft.filled_text(i, t) for i, t in zip(q["inputs_pretokenized"], q["targets_pretokenized"])]
    at = [ft.filled_text(i, t) for i, t in zip(a["inputs_pretokenized"], a["targets_pretokenized"])]
    full = bm25(qt, at)
    return [full[j, np.asarray(c)] for j, c in enumerate(run.candidates.indices)]


def _answer_lists(ds) -> list[str]:
    return [ft.answer_text(i, t).lower() for i, t in zip(ds["inputs_pretokenized"], ds["targets_pretokenized"])]


def random_target_scores(run: Run, seed: int | None = None) -> list[np.ndarray]:
    """FTRACE's Random-Target: candidates sharing the query's answer first, in random order.

    A SYNTH training example has two answers; it "shares the answer" when either is the query's
    (``tda.methods.random_target`` compares whole targets, so it is applied to a per-candidate
    answer chosen to match when possible).
    """
    from .methods import random_target

    q_ans = _answer_lists(run.data.queries.select(run.query_rows))
    a = run.data.abstracts.select(run.union)
    a_sets = [{p.strip().lower() for p in ft.answers(i, t)}
              for i, t in zip(a["inputs_pretokenized"], a["targets_pretokenized"])]
    out = np.zeros((len(q_ans), len(a_sets)))
    seed = run.seed if seed is None else seed
    for j, qa in enumerate(q_ans):
        cand = [qa if qa in s else "" for s in a_sets]
        out[j] = random_target([qa], cand, seed=seed * 100_003 + j)[0]
    return run.from_matrix(out)


def uniform_scores(run: Run, seed: int | None = None) -> list[np.ndarray]:
    """Uniform random scores (chance level)."""
    from .methods import random_scores
    seed = run.seed if seed is None else seed
    return run.from_matrix(random_scores(run.query_rows, run.union, seed=seed + 7))


# ---------------------------------------------------------------------------------------------
# TracIn, decomposed
# ---------------------------------------------------------------------------------------------
def parameter_units(model) -> dict[str, list[str]]:
    """The model's parameters split into units: ``embedding``, ``block.0``.. , ``head``, ``other``.

    Uses ``tda.gradients.select_parameters``' groups; whatever no group claims (GPT-2's position
    embeddings) is ``other``. The units partition the parameters, so "all" is their sum.
    """
    from .gradients import parameter_names, select_parameters

    names = parameter_names(model)
    units: dict[str, list[str]] = {}
    taken: set[str] = set()

    def add(unit: str, group: str) -> bool:
        try:
            found = [n for n in select_parameters(model, group) if n not in taken]
        except ValueError:
            return False
        if found:
            units[unit] = found
            taken.update(found)
        return True

    add("embedding", "embedding")
    i = 0
    while add(f"block.{i}", f"block.{i}"):
        i += 1
    add("head", "head")
    rest = [n for n in names if n not in taken]
    if rest:
        units["other"] = rest
    return units


def unit_order(units: Sequence[str]) -> list[str]:
    """Units in the order embedding, block.0, ..., head, other."""
    def key(u):
        if u == "embedding":
            return (0, 0)
        if u.startswith("block."):
            return (1, int(u.split(".")[1]))
        return (2, 0) if u == "head" else (3, 0)
    return sorted(units, key=key)


def gradient_parts(checkpoints: Sequence, task, queries, candidates, pairs: tuple[np.ndarray, np.ndarray], *,
                   batch_size: int = 64, eps: float | None = None, desc: str = "") -> dict:
    """Per checkpoint, parameter unit and correction: the pair dot products and both squared norms.

    Returns arrays ``dots [ckpt, corr, unit, pair]``, ``query_sq [ckpt, corr, unit, query]``,
    ``candidate_sq [ckpt, corr, unit, candidate]`` (``corr`` 0 = plain gradients, 1 = divided by
    ``sqrt(exp_avg_sq) + eps``, AdamW's second moments at that checkpoint), and ``units``,
    ``checkpoints``. Gradients come from ``tda.gradients.iter_gradients``; a checkpoint without
    optimizer state gets NaN for the corrected half.
    """
    import torch

    from .gradients import DEFAULT_EPS, iter_gradients, load_checkpoint_model, second_moments
    from .train import CheckpointError

    eps = DEFAULT_EPS if eps is None else eps
    qj, cc = pairs
    nq, nc = len(queries), len(candidates)
    units_ref = None
    dots_all, qsq_all, csq_all = [], [], []
    for ci, ckpt in enumerate(checkpoints):
        model = load_checkpoint_model(ckpt)
        units = parameter_units(model)
        order = unit_order(units)
        if units_ref is None:
            units_ref = order
        elif order != units_ref:
            raise ValueError(f"checkpoint {ckpt} has parameter units {order}, the first had {units_ref}")
        params = dict(model.named_parameters())
        try:
            moments = second_moments(ckpt)
            denom = {n: (moments[n].to(params[n].dtype).sqrt() + eps).reshape(-1) for n in params}
        except (CheckpointError, KeyError, ValueError):
            denom = None
        name_unit = {n: u for u in order for n in units[u]}
        names = [n for n in params if n in name_unit]
        # query gradients, held per tensor, flattened, in query order
        held = {n: torch.empty((nq, params[n].numel())) for n in names}
        for idx, grads in iter_gradients(model, task, queries, names, batch_size=batch_size,
                                         desc=f"{desc} query gradients, checkpoint {ci + 1}/{len(checkpoints)}"):
            t_idx = torch.as_tensor(idx)
            for n in names:
                held[n][t_idx] = grads[n].reshape(len(idx), -1)
        n_var = 2 if denom is not None else 1
        query_grads = [held] + ([{n: held[n] / denom[n] for n in names}] if denom is not None else [])
        qsq = np.full((2, len(order), nq), np.nan)
        csq = np.full((2, len(order), nc), np.nan)
        full = np.zeros((n_var, len(order), nq, nc))
        for v in range(n_var):
            for ui, u in enumerate(order):
                qsq[v, ui] = sum(query_grads[v][n].double().pow(2).sum(1) for n in units[u]).numpy()
        for idx, grads in iter_gradients(model, task, candidates, names, batch_size=batch_size,
                                         desc=f"{desc} candidate gradients, checkpoint {ci + 1}/{len(checkpoints)}"):
            for v in range(n_var):
                for ui, u in enumerate(order):
                    acc, sq = None, None
                    for n in units[u]:
                        g = grads[n].reshape(len(idx), -1)
                        if v:
                            g = g / denom[n]
                        part = query_grads[v][n] @ g.T
                        acc = part if acc is None else acc.add_(part)
                        s2 = g.double().pow(2).sum(1)
                        sq = s2 if sq is None else sq.add_(s2)
                    full[v, ui][:, idx] = acc.double().numpy()
                    csq[v, ui, idx] = sq.numpy()
        dots = np.full((2, len(order), len(qj)), np.nan)
        dots[:n_var] = full[:, :, qj, cc]
        if not (np.isfinite(dots[:n_var]).all() and np.isfinite(qsq[:n_var]).all()
                and np.isfinite(csq[:n_var]).all()):
            from .gradients import NonFiniteGradientError
            raise NonFiniteGradientError(f"TracIn parts at checkpoint {ckpt} are NaN or infinite")
        dots_all.append(dots)
        qsq_all.append(qsq)
        csq_all.append(csq)
        del held, query_grads, full
    return {"dots": np.stack(dots_all), "query_sq": np.stack(qsq_all), "candidate_sq": np.stack(csq_all),
            "units": list(units_ref), "checkpoints": [str(Path(c).name) if not hasattr(c, "parameters") else f"model-{i}"
                                                     for i, c in enumerate(checkpoints)]}


@dataclass
class TracInParts:
    """Decomposed TracIn of one run and one set of checkpoints (see ``gradient_parts``)."""

    dots: np.ndarray
    query_sq: np.ndarray
    candidate_sq: np.ndarray
    units: list[str]
    checkpoints: list[str]
    qj: np.ndarray
    cc: np.ndarray

    def unit_index(self, units) -> list[int]:
        if units == "all":
            return list(range(len(self.units)))
        units = [units] if isinstance(units, str) else list(units)
        bad = [u for u in units if u not in self.units]
        if bad or not units:
            raise ValueError(f"unknown parameter units {bad or units}; this model has {self.units} (or 'all')")
        return [self.units.index(u) for u in units]

    def pair_scores(self, units="all", checkpoints: Sequence[int] | None = None, similarity: str = "cosine",
                    corrected: bool = True, reduce: str = "mean") -> np.ndarray:
        """Per-pair TracIn over a union of units and a subset of checkpoints (indices; None = all)."""
        if similarity not in ("cosine", "dot"):
            raise ValueError(f"similarity must be 'cosine' or 'dot', got {similarity!r}")
        if reduce not in ("mean", "sum"):
            raise ValueError(f"reduce must be 'mean' or 'sum', got {reduce!r}")
        ui = self.unit_index(units)
        cks = list(range(len(self.checkpoints))) if checkpoints is None else list(checkpoints)
        if not cks:
            raise ValueError("no checkpoint selected")
        v = 1 if corrected else 0
        total = np.zeros(self.dots.shape[-1])
        for c in cks:
            d = self.dots[c, v, ui].sum(0)
            if np.isnan(d).any():
                raise ValueError(f"checkpoint {self.checkpoints[c]} has no optimizer state: no corrected TracIn")
            if similarity == "cosine":
                qn = np.sqrt(self.query_sq[c, v, ui].sum(0))[self.qj]
                cn = np.sqrt(self.candidate_sq[c, v, ui].sum(0))[self.cc]
                den = qn * cn
                d = np.divide(d, den, out=np.zeros_like(d), where=den > 0)
            total += d
        return total / len(cks) if reduce == "mean" else total

    def query_norms(self, units="all", corrected: bool = False) -> np.ndarray:
        """Gradient norm of each attributed query at each checkpoint: ``[ckpt, query]``."""
        ui = self.unit_index(units)
        return np.sqrt(self.query_sq[:, 1 if corrected else 0, ui].sum(1))


def tracin_parts(run: Run, which: str = "ft", verbose: bool = True) -> TracInParts:
    """The decomposed TracIn of a run at its fine-tuning (``"ft"``) or pre-training (``"pt"``)
    checkpoints, computed once and kept in the store."""
    ckpts = run.checkpoints(which)
    qj, cc = run.pairs()
    params = {**run.key, "rows": run.query_rows, "candidates": text_digest(json.dumps(run.candidates.indices)),
              "which": which, "checkpoints": [str(c.name) for c in ckpts]}

    def build(work: Path) -> None:
        if verbose:
            print(f"TracIn parts: {run.settings.dataset} seed {run.seed}, {which} checkpoints "
                  f"{[c.name for c in ckpts]}, {len(run.query_rows)} queries x {len(run.union)} candidates",
                  flush=True)
        parts = gradient_parts(ckpts, run.setup.task(), run.query_examples(), run.candidate_examples(), (qj, cc),
                               batch_size=run.settings.grad_batch_size, desc=f"{run.settings.dataset}/{which}")
        np.savez(work / "parts.npz", dots=parts["dots"].astype(np.float64), query_sq=parts["query_sq"],
                 candidate_sq=parts["candidate_sq"])
        (work / "parts.json").write_text(json.dumps({"units": parts["units"], "checkpoints": parts["checkpoints"]}))

    folder = run.setup.store.get_or_create("ftrace-tracin", params, build)
    meta = json.loads((folder / "parts.json").read_text())
    with np.load(folder / "parts.npz") as z:
        return TracInParts(z["dots"], z["query_sq"], z["candidate_sq"], meta["units"], meta["checkpoints"], qj, cc)


def tracin_scores(run: Run, parts: TracInParts, **kwargs) -> list[np.ndarray]:
    """Per-query TracIn scores over each query's candidates (``TracInParts.pair_scores`` kwargs)."""
    return run.split(parts.pair_scores(**kwargs))


# ---------------------------------------------------------------------------------------------
# EMBED
# ---------------------------------------------------------------------------------------------
@dataclass
class EmbedParts:
    """Per layer and pooling, the cosine of each (query, candidate) pair at the final checkpoint."""

    cosines: dict[str, np.ndarray]  # pooling -> [layer, pair]
    n_layers: int

    def pair_scores(self, layers: Sequence[int] | int = 0, pooling: str = "tokens") -> np.ndarray:
        if pooling not in self.cosines:
            raise ValueError(f"pooling must be one of {sorted(self.cosines)}, got {pooling!r}")
        layers = [layers] if isinstance(layers, (int, np.integer)) else list(layers)
        bad = [i for i in layers if not 0 <= i < self.n_layers]
        if bad or not layers:
            raise ValueError(f"layers {bad or layers} do not exist: this model has layers 0..{self.n_layers - 1}")
        return self.cosines[pooling][layers].mean(0)


POOLINGS = ("tokens", "target")


def embed_parts(run: Run, verbose: bool = True) -> EmbedParts:
    """EMBED's cosines per layer (0 = embedding output) and pooling, at the final fine-tuned
    checkpoint (``tda.methods.embed.pooled_states``), computed once and kept in the store."""
    from .methods.embed import cosine_matrix, pooled_states
    from .train import load_checkpoint

    final = run.final_model_dir()
    qj, cc = run.pairs()
    params = {**run.key, "rows": run.query_rows, "candidates": text_digest(json.dumps(run.candidates.indices)),
              "checkpoint": final.name, "poolings": list(POOLINGS)}

    def build(work: Path) -> None:
        model, _ = load_checkpoint(final)
        task = run.setup.task()
        n_layers = int(getattr(model.config, "n_layer", getattr(model.config, "num_layers", 0))) + 1
        out = {}
        for pooling in POOLINGS:
            qs = pooled_states(model, task, run.query_examples(), list(range(n_layers)), pooling=pooling)
            cs = pooled_states(model, task, run.candidate_examples(), list(range(n_layers)), pooling=pooling)
            out[pooling] = np.stack([cosine_matrix(a, b)[qj, cc] for a, b in zip(qs, cs)])
        np.savez(work / "embed.npz", **out)

    folder = run.setup.store.get_or_create("ftrace-embed", params, build)
    with np.load(folder / "embed.npz") as z:
        cos = {k: z[k] for k in z.files}
    return EmbedParts(cos, next(iter(cos.values())).shape[0])


def embed_scores(run: Run, parts: EmbedParts, layers=0, pooling: str = "tokens") -> list[np.ndarray]:
    return run.split(parts.pair_scores(layers, pooling))


def combine_scores(*score_lists: list[np.ndarray]) -> list[np.ndarray]:
    """The mean of several methods' per-query scores (TracIn+EMBED: the mean of two cosines)."""
    if not score_lists:
        raise ValueError("nothing to combine")
    return [np.mean(np.stack(parts), axis=0) for parts in zip(*score_lists)]


# ---------------------------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------------------------
def evaluate(run: Run, scores: Sequence[np.ndarray], ks: Sequence[int] = (10,)) -> "pd.DataFrame":
    """Per attributed query: MRR and precision/recall@k of a method's scores over its candidates.

    Before any metric the candidate sets are checked again (every proponent present, no
    duplicate) and every score array must match its candidate set's size and be finite: a
    mismatch raises instead of producing a wrong MRR.
    """
    import pandas as pd

    from . import metrics

    ft.check_candidates(run.candidates, run.data.queries)
    if len(scores) != len(run.query_rows):
        raise ValueError(f"scores for {len(scores)} queries, but the run attributes {len(run.query_rows)}")
    props = run.data.queries["proponents"]
    rows = []
    for j, (row, cands, sc) in enumerate(zip(run.query_rows, run.candidates.indices, scores)):
        sc = np.asarray(sc, dtype=np.float64)
        if sc.shape != (len(cands),):
            raise ValueError(f"query {j} (row {row}): {sc.shape} scores for {len(cands)} candidates")
        pos = {c: i for i, c in enumerate(cands)}
        relevant = [pos[p] for p in props[row]]
        m = metrics.evaluate(sc[None, :], [relevant], ks=ks)
        rows.append({"query": j, **{name: float(v[0]) for name, v in m.items()}})
    return pd.DataFrame(rows)


def evaluate_methods(run: Run, methods: Mapping[str, Sequence[np.ndarray]], ks: Sequence[int] = (10,)):
    """Long table: one row per (method, attributed query), with the query's slice and losses."""
    import pandas as pd

    info = run.query_info()
    frames = []
    for name, scores in methods.items():
        m = evaluate(run, scores, ks)
        m.insert(0, "method", name)
        frames.append(info.merge(m, on="query"))
    return pd.concat(frames, ignore_index=True)


def summary_table(per_query, metrics_: Sequence[str] = METRICS, by: Sequence[str] = ("dataset", "method"),
                  slice_: str | None = None, order: Sequence[str] | None = None):
    """Mean ± std over seeds of each seed's mean (the paper's "mean ± std over seeds").

    ``per_query`` is ``evaluate_methods``' long table for several seeds; ``slice_`` keeps one
    query slice (None: every attributed query). Columns ``<metric>``, ``<metric>_std``, ``seeds``,
    ``queries`` (mean per seed).
    """
    df = per_query if slice_ is None else per_query[per_query["slice"] == slice_]
    by = list(by)
    per_seed = df.groupby(by + ["seed"], sort=False).agg(**{m: (m, "mean") for m in metrics_},
                                                          queries=("query", "size")).reset_index()
    g = per_seed.groupby(by, sort=False)
    out = g[list(metrics_)].mean()
    std = g[list(metrics_)].std(ddof=1).fillna(0.0)
    for m in metrics_:
        out[f"{m}_std"] = std[m]
    out["seeds"] = g.size()
    out["queries"] = g["queries"].mean()
    out = out.reset_index()
    if order is not None and "method" in by:
        rank = {name: i for i, name in enumerate(order)}
        out = out.sort_values(by=[c for c in by if c != "method"] + ["method"],
                              key=lambda s: s.map(rank) if s.name == "method" else s).reset_index(drop=True)
    return out


def seed_means(per_query, metric: str = "mrr", by: Sequence[str] = ("dataset", "method"), slice_: str | None = None):
    """Per-seed mean of a metric: a table indexed by ``by`` with one column per seed."""
    df = per_query if slice_ is None else per_query[per_query["slice"] == slice_]
    return df.groupby(list(by) + ["seed"])[metric].mean().unstack("seed")


# ---------------------------------------------------------------------------------------------
# whole experiments: every run of a chapter, and the methods of the main comparison
# ---------------------------------------------------------------------------------------------
@dataclass
class RunParts:
    """A run and its stored method parts (decomposed TracIn at both checkpoint sets, EMBED)."""

    run: Run
    tracin_ft: TracInParts
    tracin_pt: TracInParts
    embed: EmbedParts


def load_runs(setup, world: str, seeds: Sequence[int], overrides: Mapping[str, Mapping] | None = None,
              datasets: Sequence[str] = DATASETS, timer: Timer | None = None, verbose: bool = True) -> list[RunParts]:
    """Prepare every (dataset, seed) run and its method parts, timing each stage.

    ``overrides`` maps a dataset to its setting overrides. Whatever is in the store is read, the
    rest computed and stored, so the chapters of Part I share one set of runs.
    """
    timer = timer or Timer()
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(DATASETS))
    if unknown:
        raise ValueError(f"overrides for unknown data sets {unknown}; data sets: {DATASETS}")
    if not list(seeds):
        raise ValueError("no seeds given")
    out = []
    for dataset in datasets:
        s = settings(world, dataset, overrides.get(dataset))
        for seed in seeds:
            run = prepare(setup, s, seed, timer=timer, verbose=verbose)
            with timer(f"TracIn, fine-tuning checkpoints ({dataset})", verbose=False):
                t_ft = tracin_parts(run, "ft", verbose=verbose)
            with timer(f"TracIn, pre-training checkpoints ({dataset})", verbose=False):
                t_pt = tracin_parts(run, "pt", verbose=verbose)
            with timer(f"EMBED ({dataset})", verbose=False):
                emb = embed_parts(run, verbose=verbose)
            out.append(RunParts(run, t_ft, t_pt, emb))
    return out


MAIN_METHODS = ("BM25", "TracIn", "TracIn (pre-training ckpts)", "EMBED", "TracIn+EMBED", "Random-Target", "random")
VARIANT_METHODS = ("TracIn (all parameters)", "EMBED (last layer)")


def method_scores(rp: RunParts, variants: bool = True) -> dict[str, list[np.ndarray]]:
    """Per-query scores of the main comparison's methods (and two variants) for one run.

    TracIn: ``MAIN_TRACIN`` over the fine-tuning (or pre-training) checkpoints; EMBED:
    ``MAIN_EMBED`` at the final checkpoint; TracIn+EMBED: the mean of those two cosines.
    """
    run = rp.run
    t_ft = tracin_scores(run, rp.tracin_ft, **MAIN_TRACIN)
    e = embed_scores(run, rp.embed, **MAIN_EMBED)
    out = {
        "BM25": bm25_scores(run),
        "TracIn": t_ft,
        "TracIn (pre-training ckpts)": tracin_scores(run, rp.tracin_pt, **MAIN_TRACIN),
        "EMBED": e,
        "TracIn+EMBED": combine_scores(t_ft, e),
        "Random-Target": random_target_scores(run),
        "random": uniform_scores(run),
    }
    if variants:
        out["TracIn (all parameters)"] = tracin_scores(run, rp.tracin_ft, **{**MAIN_TRACIN, "units": "all"})
        out["EMBED (last layer)"] = embed_scores(run, rp.embed, **{**MAIN_EMBED, "layers": [rp.embed.n_layers - 1]})
    return out


def evaluate_runs(runs: Sequence[RunParts], scores: Callable[[RunParts], Mapping[str, list[np.ndarray]]] = method_scores):
    """The long per-query table of every run for the methods ``scores(run_parts)`` returns."""
    import pandas as pd
    return pd.concat([evaluate_methods(rp.run, scores(rp)) for rp in runs], ignore_index=True)


def slice_counts(runs: Sequence[RunParts]):
    """Per run: queries, the three slices over all sampled queries, and how many were attributed."""
    import pandas as pd
    rows = []
    for rp in runs:
        r = rp.run
        sl = r.slices
        n = len(sl["learned"])
        known = sum(sl["correct_before"])
        learned = sum(sl["learned"])
        rows.append({"dataset": r.settings.dataset, "seed": r.seed, "queries": n, "learned": learned,
                     "known": known, "other": n - learned - known,
                     **{f"attributed {k}": r.query_slice.count(k) for k in SLICES},
                     "candidates (mean)": float(np.mean(r.candidates.sizes())), "candidate union": len(r.union),
                     "skipped (no proponent)": r.candidates.skipped})
    return pd.DataFrame(rows)


def finetune_history(runs: Sequence[RunParts]) -> dict[str, list[float]]:
    """Mean training loss per fine-tuning epoch of each run."""
    from .train import list_checkpoints, read_state
    return {f"{DATASET_LABELS[rp.run.settings.dataset]}, seed {rp.run.seed}":
            read_state(list_checkpoints(rp.run.finetune_dir)[-1])["epoch_losses"] for rp in runs}


# ---------------------------------------------------------------------------------------------
# comparisons behind the verdicts
# ---------------------------------------------------------------------------------------------
def _select(per_query, **filters):
    df = per_query
    for k, v in filters.items():
        if v is not None:
            df = df[df[k] == v]
    return df


def compare(per_query, a: str, b: str, metric: str = "mrr", margin: float = 0.02, **filters) -> dict:
    """Paired comparison of methods ``a`` and ``b`` on the same queries (pooled over seeds).

    ``d`` = mean over queries of metric(a) - metric(b), ``se`` its standard error; ``a`` *beats*
    ``b`` when ``d > margin`` and ``d > 2 se`` (a difference both practically and statistically
    clear). ``filters`` select rows (e.g. ``dataset="trex", slice="learned"``).
    """
    df = _select(per_query, **filters)
    wide = df[df["method"].isin([a, b])].pivot_table(index=["dataset", "seed", "query"], columns="method",
                                                      values=metric)
    missing = [m for m in (a, b) if m not in wide.columns]
    if missing:
        raise ValueError(f"no rows for method(s) {missing} with {filters}")
    wide = wide.dropna()
    d = (wide[a] - wide[b]).to_numpy()
    n = len(d)
    diff = float(d.mean()) if n else float("nan")
    se = float(d.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    return {"a": a, "b": b, "metric": metric, "n": n, "mean_a": float(wide[a].mean()) if n else float("nan"),
            "mean_b": float(wide[b].mean()) if n else float("nan"), "diff": diff, "se": se,
            "beats": bool(n > 1 and diff > margin and diff > 2 * se), "margin": margin}


def compare_groups(x: Sequence[float], y: Sequence[float], margin: float = 0.02) -> dict:
    """Unpaired comparison of two groups of per-query values: ``x`` beats ``y`` when the difference
    of means exceeds ``margin`` and twice its standard error (Welch's)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 2 or len(y) < 2:
        return {"n_x": len(x), "n_y": len(y), "mean_x": float(x.mean()) if len(x) else float("nan"),
                "mean_y": float(y.mean()) if len(y) else float("nan"), "diff": float("nan"), "se": float("nan"),
                "beats": False, "margin": margin}
    diff = float(x.mean() - y.mean())
    se = float(np.sqrt(x.var(ddof=1) / len(x) + y.var(ddof=1) / len(y)))
    return {"n_x": len(x), "n_y": len(y), "mean_x": float(x.mean()), "mean_y": float(y.mean()), "diff": diff,
            "se": se, "beats": bool(diff > margin and diff > 2 * se), "margin": margin}



def explain_saturation(norms, part_b: dict, dataset: str = "trex") -> str:
    """One paragraph, computed from the numbers, on what saturation does to TracIn here.

    ``norms``: ``gradient_norm_table``; ``part_b``: ``compare_groups`` of TracIn's per-query MRR
    on the learned (x) against the known (y) slice. The gradient sizes are compared at the first
    fine-tuning checkpoint, where the known facts are already known and the learned ones not yet.
    """
    d = norms[norms["dataset"] == dataset]
    if d.empty or not {"known", "learned"} <= set(d["slice"]):
        return "There are not both known and fine-tune-learned queries here, so the two cannot be compared."
    first = d[d["checkpoint"] == d["checkpoint"].iloc[0]]
    known, learned = (float(first[first["slice"] == s]["grad_norm"].median()) for s in ("known", "learned"))
    ratio = learned / known if known > 0 else float("inf")
    text = (f"At the first fine-tuning checkpoint the median gradient of a known query is {known:.3g}, against "
            f"{learned:.3g} for a fine-tune-learned one ({ratio:.1f} times larger). TracIn's MRR is "
            f"{part_b['mean_y']:.3f} on the known queries and {part_b['mean_x']:.3f} on the learned ones "
            f"({part_b['n_y']} and {part_b['n_x']} queries).")
    if part_b["beats"]:
        return text + (" The known queries lose accuracy beyond the noise: their small gradients carry less "
                       "signal, as the saturation argument says.")
    if part_b["diff"] == part_b["diff"] and part_b["diff"] > part_b["margin"]:
        return text + (f" The known queries do worse, but the difference ({part_b['diff']:.3f}) is within twice its "
                       f"standard error ({2 * part_b['se']:.3f}): with this many queries we cannot tell it from noise.")
    return text + (" Although the known queries' gradients are smaller, TracIn does as well on them: its cosine divides "
                   "the size out, and the gradient's direction still points at the fact.")

# The paper's main tables (REFERENCES.md, "[2nd]": read from a secondary summary of the paper's
# tables; mean ± std over seeds, in %). Random-Target: the code's early single-seed run ("[code]").
PAPER = {
    "trex": {
        "BM25": {"mrr": (77.55, 1.50), "recall@10": (60.89, 2.31)},
        "TracIn": {"mrr": (48.56, 4.40), "recall@10": (56.02, 0.67)},
        "TracIn (pre-training ckpts)": {"mrr": (62.38, 1.99), "recall@10": (57.54, 1.25)},
        "EMBED": {"mrr": (64.29, 1.32), "recall@10": (57.89, 1.38)},
        "TracIn+EMBED": {"mrr": (58.52, 3.83), "recall@10": (61.72, 0.08)},
        "Random-Target": {"mrr": (19.7, None)},
    },
    "synth": {
        "BM25": {"mrr": (87.69, 1.71), "precision@10": (52.02, 2.65), "recall@10": (4.20, 0.21)},
        "TracIn": {"mrr": (100.00, 0.0), "precision@10": (99.50, 0.14), "recall@10": (8.02, 0.01)},
        "EMBED": {"mrr": (99.58, 0.24), "precision@10": (97.12, 0.53), "recall@10": (7.83, 0.04)},
        "TracIn+EMBED": {"mrr": (100.00, 0.0), "precision@10": (98.07, 0.18), "recall@10": (7.91, 0.01)},
    },
}
PAPER_PROVENANCE = "[2nd] main tables (mean ± std over seeds); Random-Target: [code], one early seed"


def main_slice(per_query, dataset: str, min_queries: int = 5) -> str | None:
    """The slice the main comparison uses: ``"learned"`` (the paper's) when every seed has at least
    ``min_queries`` attributed learned queries, else None (all attributed queries)."""
    df = per_query[(per_query["dataset"] == dataset)]
    per_seed = df[df["slice"] == "learned"].groupby("seed")["query"].nunique()
    seeds = df["seed"].unique()
    if len(per_seed) == len(seeds) and (per_seed >= min_queries).all():
        return "learned"
    return None


def beats_all(per_query, winner: str, losers: Sequence[str], margin: float = 0.02, metric: str = "mrr",
              **filters) -> tuple[str, list[dict]]:
    """The verdict of "``winner`` beats every one of ``losers``": replicated if it beats all
    (``compare``'s rule), partly if some, not replicated if none; and the comparisons."""
    comps = [compare(per_query, winner, loser, metric=metric, margin=margin, **filters) for loser in losers]
    return verdict_from([c["beats"] for c in comps]), comps


def paper_vs_ours(summary, dataset: str, methods: Sequence[str], metrics_: Sequence[str] = METRICS):
    """The paper's number beside ours for each method and metric (both in %, mean ± std)."""
    import pandas as pd
    rows = []
    for method in methods:
        row = {"method": method}
        ours = summary[(summary["dataset"] == dataset) & (summary["method"] == method)]
        for m in metrics_:
            p = PAPER.get(dataset, {}).get(method, {}).get(m)
            row[f"{m} paper"] = "" if p is None else (f"{p[0]:.1f}" if p[1] is None else f"{p[0]:.1f} ± {p[1]:.1f}")
            row[f"{m} ours"] = fmt(float(ours[m].iloc[0]), float(ours[f"{m}_std"].iloc[0])) if len(ours) else "n/a"
        rows.append(row)
    return pd.DataFrame(rows)


def method_color(name: str) -> str:
    from .plots import METHOD_COLORS
    for key in sorted(METHOD_COLORS, key=len, reverse=True):
        if name == key or name.startswith(key + " "):
            return METHOD_COLORS[key]
    return "#555555"


def plot_method_bars(summary, methods: Sequence[str], metric: str = "mrr", paper: Mapping | None = PAPER,
                     datasets: Sequence[str] = DATASETS):
    """Horizontal bars of a metric per method (mean ± std over seeds), one panel per data set,
    with the paper's value as a black diamond where it reported one."""
    from . import plots

    fig, axes = plots.figure(width=10, height=0.45 * len(methods) + 1.6, ncols=len(datasets), sharex=True)
    axes = np.atleast_1d(axes)
    for ax, dataset in zip(axes, datasets):
        sub = summary[summary["dataset"] == dataset].set_index("method")
        y = np.arange(len(methods))[::-1]
        vals = [float(sub.loc[m, metric]) if m in sub.index else np.nan for m in methods]
        errs = [float(sub.loc[m, f"{metric}_std"]) if m in sub.index else 0.0 for m in methods]
        ax.barh(y, vals, xerr=errs, color=[method_color(m) for m in methods], alpha=0.9, capsize=3)
        if paper:
            for yi, m in zip(y, methods):
                p = paper.get(dataset, {}).get(m, {}).get(metric)
                if p is not None:
                    ax.plot(p[0] / 100, yi, marker="D", color="black", markersize=6,
                            label="paper" if yi == max(y[[i for i, mm in enumerate(methods)
                                                         if paper.get(dataset, {}).get(mm, {}).get(metric)]]) else None)
        ax.set_yticks(y, methods)
        ax.set_xlim(0, 1.05)
        ax.set_xlabel(metric.upper() if metric == "mrr" else metric)
        ax.set_title(DATASET_LABELS.get(dataset, dataset))
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="lower right", fontsize=8)
    return fig


# ---------------------------------------------------------------------------------------------
# layers, checkpoints, saturation: the score sets of the ablation chapters
# ---------------------------------------------------------------------------------------------
UNIT_LABELS = {"embedding": "embedding", "head": "head (final norm)", "other": "position embeddings"}


def unit_label(unit: str) -> str:
    if unit.startswith("block."):
        return f"block {unit.split('.')[1]}"
    return UNIT_LABELS.get(unit, unit)


def layer_row_label(name: str) -> str:
    """A readable label for a ``layer_scores`` name."""
    if name.startswith("TracIn | "):
        unit = name.split(" | ")[1]
        return "TracIn: all parameters" if unit == "all" else f"TracIn: {unit_label(unit)}"
    if name.startswith("EMBED | layer "):
        i = int(name.split()[-1])
        return f"EMBED: layer {i}" + (" (embedding output)" if i == 0 else f" (after block {i - 1})")
    return name.replace("EMBED | ", "EMBED: ")


def layer_scores(rp: RunParts) -> dict[str, list[np.ndarray]]:
    """TracIn per parameter unit (and all), EMBED per layer (and the mean over layers).

    Names: ``"TracIn | <unit>"`` (``MAIN_TRACIN`` but restricted to that unit, fine-tuning
    checkpoints) and ``"EMBED | layer <i>"`` (``MAIN_EMBED``'s pooling).
    """
    run, t, e = rp.run, rp.tracin_ft, rp.embed
    out = {f"TracIn | {u}": tracin_scores(run, t, **{**MAIN_TRACIN, "units": u}) for u in t.units}
    out["TracIn | all"] = tracin_scores(run, t, **{**MAIN_TRACIN, "units": "all"})
    for i in range(e.n_layers):
        out[f"EMBED | layer {i}"] = embed_scores(run, e, [i], MAIN_EMBED["pooling"])
    out["EMBED | all layers"] = embed_scores(run, e, list(range(e.n_layers)), MAIN_EMBED["pooling"])
    out["BM25"] = bm25_scores(run)
    return out


def checkpoint_scores(rp: RunParts) -> dict[str, list[np.ndarray]]:
    """TracIn at each single checkpoint and averaged, fine-tuning and pre-training checkpoints,
    in the four combinations of similarity (cosine/dot) and optimizer correction (on/off), for
    the main unit (``MAIN_TRACIN["units"]``) and for all parameters.

    Names: ``"<ft|pt> | <units> | <checkpoint or 'average'> | <cosine|dot> | <corrected|plain>"``.
    """
    run = rp.run
    out = {}
    for which, parts in (("ft", rp.tracin_ft), ("pt", rp.tracin_pt)):
        for units in (MAIN_TRACIN["units"], "all"):
            for sim in ("cosine", "dot"):
                for corr in (True, False):
                    tag = f"{sim} | {'corrected' if corr else 'plain'}"
                    for i, name in enumerate(parts.checkpoints):
                        out[f"{which} | {units} | {name} | {tag}"] = tracin_scores(
                            run, parts, units=units, checkpoints=[i], similarity=sim, corrected=corr)
                    out[f"{which} | {units} | average | {tag}"] = tracin_scores(
                        run, parts, units=units, similarity=sim, corrected=corr)
    return out


def split_names(summary, columns: Sequence[str], sep: str = " | "):
    """Split structured method names (``layer_scores``/``checkpoint_scores``) into columns."""
    out = summary.copy()
    parts = out["method"].str.split(sep, regex=False)
    for i, c in enumerate(columns):
        out[c] = parts.str[i]
    return out


def plot_layers(summary, datasets: Sequence[str] = DATASETS, metric: str = "mrr"):
    """MRR by layer: TracIn per parameter unit and EMBED per hidden layer, one panel per data set.

    The x axis runs from the embedding to the top of the model: TracIn's ``embedding``, each block,
    the head; EMBED's layer 0 (embedding output) and the output of each block. Dashed lines: TracIn
    over all parameters and EMBED over all layers; dotted: BM25.
    """
    from . import plots

    fig, axes = plots.figure(width=10, height=3.8, ncols=len(datasets), sharey=True)
    axes = np.atleast_1d(axes)
    for ax, dataset in zip(axes, datasets):
        sub = summary[summary["dataset"] == dataset].set_index("method")
        units = [m.split(" | ")[1] for m in sub.index if m.startswith("TracIn | ") and m != "TracIn | all"]
        units = [u for u in unit_order(units) if u != "other"]
        labels = [unit_label(u) for u in units]
        x = np.arange(len(units))
        t = [float(sub.loc[f"TracIn | {u}", metric]) for u in units]
        te = [float(sub.loc[f"TracIn | {u}", f"{metric}_std"]) for u in units]
        ax.errorbar(x, t, yerr=te, marker="o", capsize=3, color=method_color("TracIn"), label="TracIn, one unit")
        layers = sorted(int(m.split()[-1]) for m in sub.index if m.startswith("EMBED | layer "))
        e = [float(sub.loc[f"EMBED | layer {i}", metric]) for i in layers]
        ee = [float(sub.loc[f"EMBED | layer {i}", f"{metric}_std"]) for i in layers]
        ax.errorbar(np.arange(len(layers)), e, yerr=ee, marker="s", capsize=3, color=method_color("EMBED"),
                    label="EMBED, one layer")
        for name, color, style in (("TracIn | all", method_color("TracIn"), "--"),
                                   ("EMBED | all layers", method_color("EMBED"), "--"),
                                   ("BM25", method_color("BM25"), ":")):
            if name in sub.index:
                ax.axhline(float(sub.loc[name, metric]), color=color, linestyle=style, linewidth=1.2,
                           label={"TracIn | all": "TracIn, all parameters", "EMBED | all layers": "EMBED, all layers",
                                  "BM25": "BM25"}[name])
        ticks = max(len(units), len(layers))
        names = [labels[i] if i < len(labels) else "" for i in range(ticks)]
        ax.set_xticks(np.arange(ticks), names, rotation=30, fontsize=8)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel(metric.upper() if metric == "mrr" else metric)
        ax.set_title(DATASET_LABELS.get(dataset, dataset))
    axes[-1].legend(fontsize=7, loc="lower right")
    return fig


def plot_checkpoints(summary, datasets: Sequence[str] = DATASETS, units: str | None = None, metric: str = "mrr"):
    """MRR of TracIn at each single checkpoint (markers) and averaged (horizontal lines), for
    fine-tuning and pre-training checkpoints, one panel per data set (cosine, corrected)."""
    from . import plots

    units = units or MAIN_TRACIN["units"]
    fig, axes = plots.figure(width=10, height=3.6, ncols=len(datasets), sharey=True)
    axes = np.atleast_1d(axes)
    colors = {"ft": method_color("TracIn"), "pt": "#56b4e9"}
    for ax, dataset in zip(axes, datasets):
        sub = summary[(summary["dataset"] == dataset) & (summary["units"] == units) & (summary["similarity"] == "cosine")
                      & (summary["correction"] == "corrected")]
        for which, label in (("ft", "fine-tuning"), ("pt", "pre-training")):
            s = sub[sub["which"] == which]
            single = s[s["checkpoint"] != "average"].sort_values("checkpoint")
            epochs = [int(c.split("-")[1]) for c in single["checkpoint"]]
            pos = np.arange(len(epochs)) + (0 if which == "ft" else len(epochs) + 1)
            ax.errorbar(pos, single[metric], yerr=single[f"{metric}_std"], marker="o", linestyle="", capsize=3,
                        color=colors[which], label=f"{label}, one checkpoint")
            avg = s[s["checkpoint"] == "average"]
            if len(avg):
                ax.hlines(float(avg[metric].iloc[0]), pos[0] - 0.4, pos[-1] + 0.4, color=colors[which], linewidth=2,
                          label=f"{label}, average")
            for p_, ep in zip(pos, epochs):
                ax.annotate(f"{'FT' if which == 'ft' else 'PT'} {ep}", (p_, 0.02), ha="center", fontsize=7)
        ax.set_xticks([])
        ax.set_ylim(0, 1.05)
        ax.set_ylabel(metric.upper() if metric == "mrr" else metric)
        ax.set_title(DATASET_LABELS.get(dataset, dataset))
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.subplots_adjust(bottom=0.18)
    fig.set_layout_engine(None)
    return fig


def checkpoint_table(summary, units: str | None = None, similarity: str = "cosine", correction: str = "corrected"):
    """One row per (data set, checkpoint kind): MRR at each single checkpoint ("epoch e: mean ± std")
    and averaged, from ``checkpoint_scores``' summary after ``split_names``."""
    import pandas as pd
    units = units or MAIN_TRACIN["units"]
    sub = summary[(summary["units"] == units) & (summary["similarity"] == similarity)
                  & (summary["correction"] == correction)]
    rows = []
    for (dataset, which), s in sub.groupby(["dataset", "which"], sort=False):
        row = {"data set": DATASET_LABELS.get(dataset, dataset),
               "checkpoints": {"ft": "fine-tuning", "pt": "pre-training"}[which]}
        single = s[s["checkpoint"] != "average"].sort_values("checkpoint")
        for i, (_, r) in enumerate(single.iterrows(), 1):
            row[f"checkpoint {i}"] = f"epoch {int(r['checkpoint'].split('-')[1])}: {fmt(r['mrr'], r['mrr_std'])}"
        avg = s[s["checkpoint"] == "average"]
        row["average"] = fmt(float(avg["mrr"].iloc[0]), float(avg["mrr_std"].iloc[0])) if len(avg) else "n/a"
        rows.append(row)
    return pd.DataFrame(rows)


def slice_checkpoint_scores(rp: RunParts) -> dict[str, list[np.ndarray]]:
    """TracIn (``MAIN_TRACIN``) at each single fine-tuning and pre-training checkpoint, and averaged:
    names ``"<ft|pt> | <checkpoint or 'average'>"``."""
    out = {}
    for which, parts in (("ft", rp.tracin_ft), ("pt", rp.tracin_pt)):
        for i, name in enumerate(parts.checkpoints):
            out[f"{which} | {name}"] = tracin_scores(rp.run, parts, checkpoints=[i], **MAIN_TRACIN)
        out[f"{which} | average"] = tracin_scores(rp.run, parts, **MAIN_TRACIN)
    return out


def plot_slice_checkpoints(per_query, datasets: Sequence[str] = DATASETS, metric: str = "mrr"):
    """TracIn's MRR at each single checkpoint, one line per query slice (known, learned, other), one
    panel per data set: pre-training checkpoints on the left, fine-tuning ones on the right."""
    from . import plots

    fig, axes = plots.figure(width=10, height=3.8, ncols=len(datasets), sharey=True)
    axes = np.atleast_1d(axes)
    colors = {"known": "#0173b2", "learned": "#de8f05", "other": "#949494"}
    for ax, dataset in zip(axes, datasets):
        df = per_query[(per_query["dataset"] == dataset) & ~per_query["method"].str.endswith("average")]
        names = sorted(df["method"].unique(), key=lambda m: (m.split(" | ")[0] != "pt", m.split(" | ")[1]))
        x = {m: i for i, m in enumerate(names)}
        labels = [("PT " if m.startswith("pt") else "FT ") + str(int(m.split("-")[-1])) for m in names]
        for sl in SLICES:
            s = df[df["slice"] == sl]
            if not len(s):
                continue
            g = s.groupby("method")[metric].agg(["mean", "count", "std"])
            g = g.reindex(names)
            ax.errorbar([x[m] for m in names], g["mean"], yerr=g["std"] / np.sqrt(g["count"].clip(lower=1)),
                        marker="o", capsize=3, color=colors[sl], label=f"{sl} ({int(g['count'].max())} queries)")
        n_pt = sum(m.startswith("pt") for m in names)
        if 0 < n_pt < len(names):
            ax.axvline(n_pt - 0.5, color="black", linewidth=0.8, linestyle=":")
        ax.set_xticks(range(len(names)), labels, fontsize=8)
        ax.set_ylim(0, 1.05)
        ax.set_xlabel("checkpoint (PT = pre-training epoch, FT = fine-tuning epoch)")
        ax.set_ylabel("TracIn MRR")
        ax.set_title(DATASET_LABELS.get(dataset, dataset))
        ax.legend(fontsize=7, loc="lower left")
    return fig


def loss_bins(per_query, edges: Sequence[float] = (0.0, 0.05, 0.3, 1.0, 2.0, 4.0, np.inf), column: str = "loss_before"):
    """Add a ``loss bin`` column: the query's loss at the start of fine-tuning, in fixed bins."""
    import pandas as pd
    labels = [f"{a:g}–{b:g}" if np.isfinite(b) else f"> {a:g}" for a, b in zip(edges[:-1], edges[1:])]
    out = per_query.copy()
    out["loss bin"] = pd.cut(out[column], bins=list(edges), labels=labels, include_lowest=True, right=False)
    return out


def binned_mrr(per_query, methods: Sequence[str], metric: str = "mrr"):
    """Mean metric per (dataset, method, loss bin) over all seeds' queries, with counts and s.e."""
    df = per_query[per_query["method"].isin(methods)]
    g = df.groupby(["dataset", "method", "loss bin"], observed=True)[metric]
    out = g.agg(["mean", "count", "std"]).reset_index()
    out["se"] = out["std"] / np.sqrt(out["count"].clip(lower=1))
    return out


def plot_saturation(binned, norms, methods: Sequence[str], datasets: Sequence[str] = DATASETS):
    """Top row: MRR per bin of the query's starting loss, per method. Bottom row: the query's gradient
    norm (``gradient_norm_table``) at the fine-tuning checkpoints against that loss."""
    from . import plots

    plots.setup_style()
    fig, axes = plots.plt.subplots(2, len(datasets), figsize=(10, 7), squeeze=False)
    for j, dataset in enumerate(datasets):
        ax = axes[0, j]
        sub = binned[binned["dataset"] == dataset]
        cats = [c for c in binned["loss bin"].cat.categories if c in set(sub["loss bin"].astype(str))]
        x = {c: i for i, c in enumerate(cats)}
        for m in methods:
            s = sub[sub["method"] == m]
            if not len(s):
                continue
            ax.errorbar([x[str(c)] for c in s["loss bin"].astype(str)], s["mean"], yerr=s["se"], marker="o", capsize=3,
                        color=method_color(m), label=m, linestyle="-" if not m.endswith("ckpts)") else "--")
        counts = sub.groupby("loss bin", observed=True)["count"].max()
        ax.set_xticks(range(len(cats)), [f"{c}\n(n={int(counts.get(c, 0))})" for c in cats], fontsize=7)
        ax.set_ylim(0, 1.05)
        ax.set_xlabel("query loss at the start of fine-tuning (nats)")
        ax.set_ylabel("MRR")
        ax.set_title(DATASET_LABELS.get(dataset, dataset))
        ax = axes[1, j]
        n = norms[norms["dataset"] == dataset]
        for ck in sorted(n["checkpoint"].unique()):
            s = n[n["checkpoint"] == ck]
            ax.scatter(s["loss_before"].clip(lower=1e-3), s["grad_norm"], s=10, alpha=0.6,
                       label=f"FT {ck.replace('epoch-', 'epoch ').replace(' 0', ' ').replace(' 0', ' ')}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("query loss at the start of fine-tuning (nats)")
        ax.set_ylabel("query gradient norm (all parameters)")
    axes[0, -1].legend(fontsize=7)
    axes[1, -1].legend(fontsize=7, title="checkpoint", title_fontsize=7)
    fig.tight_layout()
    return fig


def gradient_norm_table(runs: Sequence[RunParts], units: str = "all", corrected: bool = False):
    """One row per (run, attributed query, fine-tuning checkpoint): the query's gradient norm
    (plain gradients of all parameters by default: the size saturation is about) and its loss
    before and after fine-tuning."""
    import pandas as pd
    frames = []
    for rp in runs:
        info = rp.run.query_info()
        norms = rp.tracin_ft.query_norms(units, corrected=corrected)
        for c, name in enumerate(rp.tracin_ft.checkpoints):
            f = info[["dataset", "seed", "query", "slice", "loss_before", "loss_after"]].copy()
            f["checkpoint"] = name
            f["grad_norm"] = norms[c]
            frames.append(f)
    return pd.concat(frames, ignore_index=True)


# ---------------------------------------------------------------------------------------------
# tables and figures of the chapters
# ---------------------------------------------------------------------------------------------
DATASET_LABELS = {"trex": "TREx analogue", "synth": "SYNTH"}


def query_with_proponents(data: ft.FtraceData, row: int = 0, n: int = 6):
    """A query and up to ``n`` of its proponents, as a table (masked text, answer, filled text)."""
    import pandas as pd

    q = data.queries[row]
    out = [{"role": "query", "masked text": q["inputs_pretokenized"],
            "answer": ft.answer_text(q["inputs_pretokenized"], q["targets_pretokenized"])}]
    for i in q["proponents"][:n]:
        a = data.abstracts[i]
        out.append({"role": f"proponent (row {i})", "masked text": a["inputs_pretokenized"],
                    "answer": ft.answer_text(a["inputs_pretokenized"], a["targets_pretokenized"])})
    return pd.DataFrame(out)


def plot_relation_counts(summaries: Mapping[str, dict]):
    """Bars of queries and abstracts per relation, one panel per data set (``ft.summarize`` dicts)."""
    from . import plots

    fig, axes = plots.figure(width=9.5, height=3.8, ncols=len(summaries))
    axes = np.atleast_1d(axes)
    for ax, (name, s) in zip(axes, summaries.items()):
        rels = sorted(set(s["query_relations"]) | set(s["abstract_relations"]), key=lambda r: int(r[1:]))
        x = np.arange(len(rels))
        qa = np.array([s["query_relations"].get(r, 0) for r in rels], dtype=float)
        aa = np.array([s["abstract_relations"].get(r, 0) for r in rels], dtype=float)
        ax.bar(x - 0.2, qa / max(qa.sum(), 1), 0.4, label=f"queries ({int(qa.sum())})")
        ax.bar(x + 0.2, aa / max(aa.sum(), 1), 0.4, label=f"abstract facts ({int(aa.sum())})")
        ax.set_xticks(x, rels, rotation=90, fontsize=8)
        ax.set_ylabel("share")
        ax.set_title(DATASET_LABELS.get(name, name))
        ax.legend(fontsize=8)
    return fig


# Proponents per query in the real data sets (REFERENCES.md: TREx [2nd], SYNTH from the generator).
PAPER_PROPONENTS = {"trex": {"median": 7, "mean": 83}, "synth": {"median": 124, "mean": 124}}


def plot_proponent_histograms(summaries: Mapping[str, dict]):
    """Histogram of proponents per query, one panel per data set (``ft.summarize`` dicts), with the
    real data set's median and mean as vertical lines."""
    from . import plots

    fig, axes = plots.figure(width=9.5, height=3.4, ncols=len(summaries))
    axes = np.atleast_1d(axes)
    for ax, (name, s) in zip(axes, summaries.items()):
        counts = np.asarray(s["proponents_per_query"])
        paper = PAPER_PROPONENTS.get(name, {})
        hi = int(max(counts.max(), paper.get("mean", 0))) + 5
        ax.hist(counts, bins=np.arange(-0.5, hi + 1.5, max(1, hi // 60)), color=plots.METHOD_COLORS["BM25"],
                label=f"ours ({len(counts)} queries)")
        for stat, style in (("median", "--"), ("mean", ":")):
            if stat in paper and not (stat == "mean" and paper["mean"] == paper["median"]):
                ax.axvline(paper[stat], color="black", linestyle=style, linewidth=1.2, label=f"real data: {stat} {paper[stat]}")
        ax.set_xlim(0, hi)
        ax.set_xlabel("proponents of a query")
        ax.set_ylabel("queries")
        ax.set_title(f"{DATASET_LABELS.get(name, name)} (ours: median {np.median(counts):.0f})")
        ax.legend(fontsize=8)
    return fig


# ---------------------------------------------------------------------------------------------
# verdict rules (stated in the chapters before their results are computed)
# ---------------------------------------------------------------------------------------------
def beats(a: float, b: float, margin: float) -> bool:
    """``a`` beats ``b`` when it is higher by more than ``margin``."""
    return bool(a - b > margin)


__all__ = [
    "DATASETS", "SLICES", "METRICS", "explain_saturation", "MAIN_TRACIN", "MAIN_EMBED", "FtraceSettings", "PRESETS", "settings", "Timer",
    "SYNTH_SLOT_DENSITY", "synth_entity_count", "build_data", "data_digest", "pick_checkpoints", "Run", "finetune", "select_queries", "prepare",
    "bm25_scores", "random_target_scores", "uniform_scores", "parameter_units", "unit_order", "gradient_parts",
    "TracInParts", "tracin_parts", "tracin_scores", "EmbedParts", "embed_parts", "embed_scores",
    "combine_scores", "evaluate", "evaluate_methods", "summary_table", "seed_means", "fmt", "beats",
    "verdict_from", "RunParts", "load_runs", "MAIN_METHODS", "VARIANT_METHODS", "method_scores", "evaluate_runs",
    "slice_counts", "finetune_history", "compare", "compare_groups", "PAPER", "PAPER_PROVENANCE", "main_slice",
    "beats_all", "paper_vs_ours", "method_color", "plot_method_bars", "UNIT_LABELS", "unit_label", "layer_row_label", "layer_scores",
    "checkpoint_scores", "split_names", "plot_layers", "plot_checkpoints", "loss_bins", "binned_mrr",
    "plot_saturation", "gradient_norm_table", "checkpoint_table", "slice_checkpoint_scores",
    "plot_slice_checkpoints", "DATASET_LABELS", "query_with_proponents", "plot_relation_counts", "PAPER_PROPONENTS", "plot_proponent_histograms",
]
