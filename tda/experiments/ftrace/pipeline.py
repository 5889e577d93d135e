"""Part I's pipeline: settings, the stored stages of a run, and every run of a chapter.

One *run* (:class:`FtraceRun`) is a dataset (the TREx analogue or SYNTH), a seed, and everything
the seed decides: the query sample (and, for SYNTH, the facts), the fine-tuning run of the base
model on the attribution set, the query slices and the candidate sets. Each expensive step is an
artifact in the store, keyed by all its parameters, so the five chapters share them: whichever
notebook runs first pays, the others read::

    build_data ──> finetune_attribution_set (checkpoint + AdamW state per epoch) ──> query slices
        │                                                                             │
        └──────────────> candidate sets of the attributed queries <──────────────────┘
                                  │
               TracIn parts (tda.methods.tracin) · EMBED parts (tda.methods.embed)

TracIn is stored *decomposed* (``tda.methods.tracin.TracInParts``): for every checkpoint, every
parameter unit (the input embedding, each transformer block, the head, the rest) and with or
without AdamW's correction, the dot products of query and candidate gradients and both squared
norms. EMBED is stored per layer and pooling (``tda.methods.embed.EmbedParts``). Every variant a
chapter scores is then a combination of stored numbers (``tda.experiments.ftrace.analysis``).

Settings: the dataclass defaults below; each world's TREx and SYNTH settings are in
``notebooks/params.yml`` (section ``worlds``), with the reasons they were chosen. In short (issue 11):

- worlds and base models: with ``own_world`` every seed draws its own world (``WorldConfig.seed``
  = the seed) and pre-trains its own base model, so seeds are independent replications; the
  ``tiny`` base model (2 blocks, d=64) with *untied* input and output embeddings, as mT5's
  (``tie_embeddings``; part of the base model's store key), so TracIn's "embedding layer" is the
  input embedding alone. Per-example gradients at 7 checkpoints over thousands of candidates per
  run are the cost that sets the model size.
- fine-tuning: AdamW at about a tenth of the pre-training peak rate (mT5 is fine-tuned at a low
  rate on its own objective, so the facts it knew stay known), on the whole attribution set (as the
  paper fine-tunes on FTRACE's abstracts).
- checkpoints: at fractions of the runs, as the paper's: fine-tuning checkpoints at 5k, 10k, 30k
  and 80k of 80k steps (``ft_checkpoints``), pre-training checkpoints 0.5-1.5% into pre-training
  (``pt_checkpoints``: mT5's 5.1k, 10.2k, 15.3k steps of ~1M), written inside epochs
  (``tda.train``'s ``save_at_steps``).
- queries and slices (``tda.data.slices.paper_slices``): the paper's code decodes with beam 3; a
  query is *learned* when its top answer is right at the last fine-tuning checkpoint and the
  answer is not among the 3 beams at the first; *known* when the base model answers it; the rest
  *other*. TREx samples ``n_queries`` facts (``known_share`` of them in pre-training) and
  attributes at most ``max_learned`` / ``max_known`` / ``max_other`` of each slice; SYNTH
  attributes every query. Attribution targets and query losses leave EOS out (``task.without_eos``).
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field, fields, replace
from functools import cached_property
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from ... import metrics
from ...base import check_fractions, world_params, world_setup
from ...checkpoints import list_checkpoints, load_checkpoint, run_problems
from ...data import ftrace as ft
from ...data.fidelity import TOP_K, reciprocal_ranks
from ...methods.bm25_index import BM25Index
from ...methods.embed import EmbedParts, embed_parts
from ...methods.tracin import TracInParts, tracin_parts
from ...params import unknown_settings, world_settings
from ...progress import Timer
from ...seeds import derive_seed
from ...store import text_digest
from ...train import BATCH_ORDER, TrainConfig, checkpoints_at, steps_at
from ..sources import (NotAvailableError, base_checkpoints, base_model_dir, check_pretraining, ftrace_data, is_source,
                       pretrain_config, train_on)

DATASETS = ("trex", "synth")
SLICES = ("learned", "known", "other")
POOLINGS = ("tokens", "target")  # EMBED's poolings stored per run


# ---------------------------------------------------------------------------------------------
# settings
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FtraceSettings:
    """Everything that defines a run besides the world and the seed (defaults: the default world's
    TREx analogue; the reasons for each value are in params.yml and the module docstring)."""

    dataset: str = "trex"
    size: str = "tiny"  # base model size (tda.models.SIZES)
    pretrain: Mapping | None = None  # overrides of the base model's pre-training (tda.base.pretrain_config)
    tie_embeddings: bool = False  # Part I's models are untied, as mT5 (tied stays available)
    own_world: bool = True  # each seed draws its own world and base model (else every seed uses the setup's)
    # data
    n_queries: int | None = None  # TREx: facts sampled as queries (None: every fact); SYNTH: query facts
    known_share: float | None = None  # TREx: share of sampled facts in pre-training (None: as they come)
    synth_facts: int = 60  # SYNTH: facts in the attribution set
    synth_entities: int | None = None  # SYNTH: entities 1..n (None: build_synth's regime, >= 3 facts each)
    relations: tuple[str, ...] | None = None  # None: every relation of the world
    # which queries are attributed (None = all of that slice)
    max_learned: int | None = 100
    max_known: int | None = 30
    max_other: int | None = 20
    on_missing: str = "error"  # a query without proponent: "error" or "skip" (counted)
    # candidate sets (paper: k=100..250, m=100, r=100 over 1.5M abstracts)
    k: int = 100
    m: int = 100
    r: int = 100
    # fine-tuning
    epochs: int = 20
    lr: float = 5e-4
    batch_size: int = 16
    schedule: str = "linear"
    warmup_steps: int = 50
    # checkpoints, as fractions of the fine-tuning / pre-training run (see the module docstring)
    ft_checkpoints: tuple[float, ...] = (5 / 80, 10 / 80, 30 / 80, 1.0)
    pt_checkpoints: tuple[float, ...] = (0.005, 0.01, 0.015)
    beams: int = 3  # the learned slice's beam search (the paper's code: 3)
    grad_batch_size: int = 64

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {DATASETS}, got {self.dataset!r}")
        if self.on_missing not in ("error", "skip"):
            raise ValueError(f"on_missing must be 'error' or 'skip', got {self.on_missing!r}")
        if self.known_share is not None and not 0.0 <= float(self.known_share) <= 1.0:
            raise ValueError(f"known_share is a share of the queries and must be in [0, 1], got {self.known_share}")
        if self.n_queries is not None and self.n_queries < 1:
            raise ValueError(f"n_queries must be >= 1 (or None: every fact), got {self.n_queries}")
        if self.synth_facts < 1:
            raise ValueError(f"synth_facts must be >= 1, got {self.synth_facts}")
        if not self.lr > 0 or self.epochs < 1 or self.beams < 1:
            raise ValueError(f"lr must be > 0, epochs and beams >= 1; got lr={self.lr}, epochs={self.epochs}, "
                             f"beams={self.beams}")
        for name in ("ft_checkpoints", "pt_checkpoints"):
            object.__setattr__(self, name, tuple(check_fractions(getattr(self, name), name)))
            if not getattr(self, name):
                raise ValueError(f"{name} is empty: TracIn needs at least one checkpoint")
        if self.ft_checkpoints[-1] != 1.0:
            raise ValueError(f"the last of ft_checkpoints must be 1.0 (the end of fine-tuning: the learned slice and "
                             f"EMBED use the final model), got {self.ft_checkpoints}")
        if self.relations is not None:
            object.__setattr__(self, "relations", tuple(ft.check_relations(self.relations)))
        if self.pretrain is not None:
            object.__setattr__(self, "pretrain", dict(self.pretrain))
        for name in ("max_learned", "max_known", "max_other"):
            v = getattr(self, name)
            if v is not None and v < 0:
                raise ValueError(f"{name} must be >= 0 or None, got {v}")

    @classmethod
    def for_world(cls, world: str, dataset: str, overrides: Mapping | None = None) -> "FtraceSettings":
        """The settings a world of params.yml gives a dataset, with single settings overridden.

        An unknown world, dataset or setting is an error that names the known ones."""
        if dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")
        known = [f.name for f in fields(cls)]
        section = world_settings(world, "ftrace")
        unknown_settings(section, DATASETS, f"data sets in params.yml (world {world!r}, section ftrace)")
        named = section.get(dataset) or {}
        unknown_settings(named, known, f"FTRACE settings in params.yml (world {world!r}, {dataset})")
        overrides = dict(overrides or {})
        unknown_settings(overrides, known, "FTRACE settings")
        if overrides.get("dataset", dataset) != dataset or named.get("dataset", dataset) != dataset:
            raise ValueError("the dataset is chosen by the argument, not by a setting")
        return replace(cls(**{**named, "dataset": dataset}), **overrides)

    def train_config(self, seed: int) -> TrainConfig:
        return TrainConfig(epochs=self.epochs, lr=self.lr, batch_size=self.batch_size,
                           schedule=self.schedule, warmup_steps=self.warmup_steps, seed=seed)

    def base_kind(self) -> dict:
        """``tda.base.base_model_dir``'s keywords for this run's base model."""
        return {"tie_embeddings": self.tie_embeddings, "early_checkpoints": self.pt_checkpoints}


def checkpoint_label(fraction: float) -> str:
    """A checkpoint named by how far into its run it was taken (seed-independent): ``"6.25%"``."""
    return f"{100 * float(fraction):g}%"


def label_fraction(label: str) -> float:
    """``checkpoint_label``'s inverse (``"6.25%"`` -> 0.0625)."""
    if not isinstance(label, str) or not label.endswith("%"):
        raise ValueError(f"{label!r} is not a checkpoint label such as '6.25%'")
    return float(label[:-1]) / 100


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------
def seed_setup(setup, s: FtraceSettings, seed: int):
    """The world a seed runs in: with ``s.own_world`` the setup's world drawn with ``seed`` (its own
    facts, tokenizer and base models), else the setup itself (always for a real source: one data set)."""
    if is_source(setup) or not s.own_world or setup.world_config.seed == seed:
        return setup
    return world_setup(setup.preset, {**asdict(setup.world_config), "seed": seed}, store=setup.store)


def build_data(world, s: FtraceSettings, seed: int) -> ft.FtraceData:
    """The dataset of a run: the TREx analogue or SYNTH, its query sample decided by ``seed``."""
    if s.dataset == "trex":
        return ft.build_trex(world, n_queries=s.n_queries, known_share=None if s.n_queries is None else s.known_share,
                             relations=s.relations, seed=seed)
    return ft.build_synth(world, n_facts=s.synth_facts, n_query_facts=s.n_queries, relations=s.relations,
                          n_entities=s.synth_entities, seed=seed)


def setup_data(setup, s: FtraceSettings, seed: int) -> ft.FtraceData:
    """The dataset of a run in ``setup``: ``build_data`` on the synthetic world, else the real
    source's (``tda.experiments.sources.ftrace_data``: its sample for ``seed``)."""
    return ftrace_data(setup, s, seed) if is_source(setup) else build_data(setup.world, s, seed)


def seq2seq(setup) -> bool:
    """Whether the setup's model is an encoder-decoder (its examples are then in T5's raw format)."""
    return bool(getattr(setup.task(), "is_seq2seq", False))


def data_digest(data: ft.FtraceData) -> str:
    """A hash of a dataset's text (part of every store key, so other data never reuses an artifact)."""
    q, a = data
    return text_digest(list(q["inputs_pretokenized"]) + list(q["targets_pretokenized"]) +
                       list(a["inputs_pretokenized"]) + list(a["targets_pretokenized"]) + list(a["facts"]))


# ---------------------------------------------------------------------------------------------
# a run
# ---------------------------------------------------------------------------------------------
@dataclass
class FtraceRun:
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
        """TracIn's fine-tuning checkpoints (``ft_checkpoints`` of the run), first to last."""
        return checkpoints_at(self.finetune_dir, self.settings.ft_checkpoints)

    def pretrain_checkpoints(self) -> list[Path]:
        """TracIn's pre-training checkpoints (``pt_checkpoints`` of the base model's pre-training); a
        real source's model has none (``NotAvailableError``)."""
        check_pretraining(self.setup, "TracIn's pre-training checkpoints")
        return checkpoints_at(self.base_dir, self.settings.pt_checkpoints)

    def checkpoints(self, which: str) -> list[Path]:
        if which == "ft":
            return self.finetune_checkpoints()
        if which == "pt":
            return self.pretrain_checkpoints()
        raise ValueError(f"checkpoints are 'ft' (fine-tuning) or 'pt' (pre-training), got {which!r}")

    def checkpoint_labels(self, which: str) -> list[str]:
        """Seed-independent names of the checkpoints (``checkpoint_label`` of their fractions)."""
        fractions = {"ft": self.settings.ft_checkpoints, "pt": self.settings.pt_checkpoints}
        if which not in fractions:
            raise ValueError(f"checkpoints are 'ft' (fine-tuning) or 'pt' (pre-training), got {which!r}")
        return [checkpoint_label(f) for f in fractions[which]]

    def final_model_dir(self) -> Path:
        return list_checkpoints(self.finetune_dir)[-1]

    # -- examples ------------------------------------------------------------------------------
    @property
    def union(self) -> list[int]:
        """Every abstract row that is a candidate of some attributed query, ascending."""
        return sorted({c for cands in self.candidates.indices for c in cands})

    def query_examples(self):
        return ft.to_examples(self.data.queries.select(self.query_rows), seq2seq=seq2seq(self.setup))

    def candidate_examples(self):
        return ft.to_examples(self.data.abstracts.select(self.union), seq2seq=seq2seq(self.setup))

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

    # -- whole-set BM25 ------------------------------------------------------------------------
    @cached_property
    def bm25_index(self) -> BM25Index:
        """BM25Plus over the whole attribution set (``ft.bm25_tokens``: masks filled with the answers)."""
        a = self.data.abstracts
        return BM25Index([ft.bm25_tokens(i, t) for i, t in zip(a["inputs_pretokenized"], a["targets_pretokenized"])],
                         desc=None)

    @cached_property
    def whole_set_rr(self) -> list[float]:
        """Per query row: reciprocal rank of its first proponent in BM25's top ``TOP_K`` of the whole
        attribution set (0 if none there), as FTRACE's BM25 row is scored."""
        q = self.data.queries
        tops, _ = self.bm25_index.top_k([ft.bm25_tokens(i, t) for i, t in zip(q["inputs_pretokenized"],
                                                                             q["targets_pretokenized"])], TOP_K)
        return reciprocal_ranks(q["proponents"], tops)

    def query_info(self) -> pd.DataFrame:
        """One row per attributed query: slice, whether known in pre-training, losses, relation, the
        whole-set BM25 reciprocal rank, and what a random order of its candidates scores (exact
        expectations: ``chance_mrr``, ``chance_precision@10``, ``chance_recall@10``)."""
        q = self.data.queries
        rows = []
        for j, row in enumerate(self.query_rows):
            n_cand, n_prop = len(self.candidates.indices[j]), len(q[row]["proponents"])
            p10, r10 = metrics.chance_at_k(n_cand, n_prop, 10)
            rows.append({
                "dataset": self.settings.dataset, "seed": self.seed, "query": j, "row": row,
                "uuid": q[row]["uuid"], "relation": q[row]["predicate_id"], "slice": self.query_slice[j],
                "in_pretraining": bool(q[row]["known"]) if "known" in q.column_names else None,  # None: not recorded
                "correct_before": self.slices["correct_before"][row],
                "correct_after": self.slices["correct_after"][row],
                "loss_before": self.slices["loss_before"][row], "loss_after": self.slices["loss_after"][row],
                "n_candidates": n_cand, "n_proponents": n_prop, "bm25_whole_set_rr": self.whole_set_rr[row],
                "chance_mrr": metrics.chance_mrr(n_cand, n_prop), "chance_precision@10": p10, "chance_recall@10": r10,
            })
        return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# the stages of a run
# ---------------------------------------------------------------------------------------------
def _finetune_key(setup, s: FtraceSettings, seed: int, data: ft.FtraceData) -> dict:
    """Everything a fine-tuning run depends on (and nothing else, so other settings can change)."""
    return {**world_params(setup.world_config), "size": s.size,
            "pretrain": asdict(pretrain_config(setup, s.size, s.pretrain)), "base": s.base_kind(), "seed": seed,
            "data": data_digest(data), "train": asdict(s.train_config(seed)), "dataset": s.dataset,
            "batch_order": BATCH_ORDER, "checkpoints": list(s.ft_checkpoints)}


def finetune_attribution_set(setup, s: FtraceSettings, seed: int, data: ft.FtraceData | None = None) -> Path:
    """The fine-tuning run of a dataset (checkpoint + AdamW state per epoch, and at the fractions
    ``ft_checkpoints`` of the run), from the store if there.

    Training data: the attribution set, as causal cloze examples (``to_examples``). The run starts
    from the fully pre-trained base model and uses the seed for its batch order.
    """
    data = data if data is not None else setup_data(setup, s, seed)
    key = _finetune_key(setup, s, seed, data)

    def build(work: Path) -> None:
        model, tokenizer = load_checkpoint(base_checkpoints(setup, s.size, s.pretrain, **s.base_kind())[-1])
        examples = ft.to_examples(data.abstracts, seq2seq=seq2seq(setup))
        config = s.train_config(seed)
        train_on(setup, model, tokenizer, examples, work, config, desc=f"fine-tune {s.dataset} (seed {seed})",
                 save_at_steps=steps_at(s.ft_checkpoints, len(examples), config))

    return setup.store.get_or_create("ftrace-finetune", key, build, resumable=True, check=run_problems)


def select_queries(slices: Mapping[str, list], s: FtraceSettings, seed: int,
                   eligible: Sequence[bool] | None = None) -> tuple[list[int], list[str]]:
    """Which queries to attribute: up to ``max_*`` of each slice, a seeded sample, in row order.

    Slices (``tda.data.slices.paper_slices``): ``learned`` (the paper's: right at the last
    fine-tuning checkpoint, not in the top 3 at the first), ``known`` (right before fine-tuning),
    ``other`` (the rest). ``eligible`` (per row) leaves out queries that cannot be
    evaluated (no proponent, with ``on_missing="skip"``).
    """
    n = len(slices["correct_before"])
    names = []
    for before, learned in zip(slices["correct_before"], slices["learned"]):
        names.append("learned" if learned else "known" if before else "other")
    rng = random.Random(derive_seed(seed, "ftrace-select"))
    chosen: list[int] = []
    for name, cap in (("learned", s.max_learned), ("known", s.max_known), ("other", s.max_other)):
        rows = [i for i in range(n) if names[i] == name and (eligible is None or eligible[i])]
        chosen += rows if cap is None or cap >= len(rows) else rng.sample(rows, cap)
    chosen.sort()
    return chosen, [names[i] for i in chosen]


def prepare(setup, s: FtraceSettings, seed: int, timer: Timer | None = None, verbose: bool = True) -> FtraceRun:
    """Build (or load) everything of one run up to the candidate sets. ``setup`` is the world the
    run uses (``seed_setup`` gives a seed its own)."""
    timer = timer or Timer()
    with timer(f"data ({s.dataset})", verbose=False):
        data = setup_data(setup, s, seed)
    with timer(f"base model ({s.size}, pre-training)", verbose=False):
        base_dir = base_model_dir(setup, s.size, s.pretrain, **s.base_kind())
    with timer(f"fine-tuning ({s.dataset})", verbose=False):
        ft_dir = finetune_attribution_set(setup, s, seed, data)
    # Later artifacts are keyed by the fine-tuning run's store key (a hash of everything it depends
    # on) and the data, so that settings which do not touch them never invalidate them.
    key = {"world": asdict(setup.world_config), "finetune": ft_dir.name, "base": base_dir.name, "seed": seed,
           "data": data_digest(data)}
    task = setup.task()
    ft_ckpts = checkpoints_at(ft_dir, s.ft_checkpoints)

    def compute_slices():
        before, _ = load_checkpoint(list_checkpoints(ft_dir)[0])
        out = ft.paper_slices(data.queries, before, ft_ckpts, task, beams=s.beams)
        if is_source(setup):  # a real source's model has no pre-training checkpoints (check_pretraining)
            return out
        # how much the base model knew at TracIn's pre-training checkpoints (the paper's sit before
        # known-fact accuracy rises)
        out["correct_at_pt"] = [ft.answer_checks(load_checkpoint(c)[0], task, data.queries, s.beams)["top1"]
                                for c in checkpoints_at(base_dir, s.pt_checkpoints)]
        return out

    with timer(f"query slices ({s.dataset})", verbose=False):
        slices = setup.store.get_json("ftrace-slices", {**key, "checkpoints": [c.name for c in ft_ckpts],
                                                        "beams": s.beams, "slices": "paper-2"}, compute_slices)
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
    run = FtraceRun(setup=setup, settings=s, seed=seed, data=data, finetune_dir=ft_dir, base_dir=base_dir,
                    slices=slices, query_rows=rows, query_slice=names, candidates=cands, key=key)
    if verbose:
        counts = {n: names.count(n) for n in SLICES}
        print(f"{s.dataset} seed {seed}: {len(data.queries)} queries "
              f"({sum(slices['learned'])} learned, {sum(slices['correct_before'])} known before fine-tuning), "
              f"{len(data.abstracts)} abstracts; attributing {len(rows)} {counts}, "
              f"{len(run.union)} distinct candidates", flush=True)
    return run


def _parts_key(run: FtraceRun) -> dict:
    return {**run.key, "rows": run.query_rows, "candidates": text_digest(json.dumps(run.candidates.indices))}


def stored_tracin_parts(run: FtraceRun, which: str = "ft", verbose: bool = True) -> TracInParts:
    """The decomposed TracIn of a run (``tda.methods.tracin.tracin_parts`` split into parameter units,
    plain and Adam-corrected) at its fine-tuning (``"ft"``) or pre-training (``"pt"``) checkpoints,
    computed once and kept in the store. The loss leaves EOS out (``task.without_eos()``), as
    FTRACE's code does; the parts' checkpoints are named by ``run.checkpoint_labels``."""
    ckpts = run.checkpoints(which)
    qj, cc = run.pairs()
    params = {**_parts_key(run), "which": which, "checkpoints": [str(c.name) for c in ckpts], "eos": False}

    def build(work: Path) -> None:
        if verbose:
            print(f"TracIn parts: {run.settings.dataset} seed {run.seed}, {which} checkpoints "
                  f"{[c.name for c in ckpts]}, {len(run.query_rows)} queries x {len(run.union)} candidates",
                  flush=True)
        tracin_parts(ckpts, run.setup.task().without_eos(), run.query_examples(), run.candidate_examples(),
                     by_unit=True, pairs=(qj, cc), correction="available", batch_size=run.settings.grad_batch_size,
                     desc=f"{run.settings.dataset}/{which}").save(work)

    parts = TracInParts.load(run.setup.store.get_or_create("ftrace-tracin", params, build), qj, cc)
    parts.checkpoints = run.checkpoint_labels(which)
    return parts


def stored_embed_parts(run: FtraceRun, verbose: bool = True) -> EmbedParts:
    """EMBED's cosines per layer (0 = embedding output) and pooling at the final fine-tuned checkpoint
    (``tda.methods.embed.embed_parts``), computed once and kept in the store."""
    final = run.final_model_dir()
    params = {**_parts_key(run), "checkpoint": final.name, "poolings": list(POOLINGS)}

    def build(work: Path) -> None:
        parts = embed_parts(final, run.setup.task(), run.query_examples(), run.candidate_examples(),
                            poolings=POOLINGS, pairs=run.pairs())
        np.savez(work / "embed.npz", **parts.cosines)

    folder = run.setup.store.get_or_create("ftrace-embed", params, build)
    with np.load(folder / "embed.npz") as z:
        return EmbedParts({k: z[k] for k in z.files})


# ---------------------------------------------------------------------------------------------
# every run of a chapter
# ---------------------------------------------------------------------------------------------
@dataclass
class RunParts:
    """A run and its stored method parts (decomposed TracIn at both checkpoint sets, EMBED)."""

    run: FtraceRun
    tracin_ft: TracInParts
    tracin_pt: TracInParts | None  # None: a real source's model has no pre-training checkpoints
    embed: EmbedParts


def load_runs(setup, world: str, seeds: Sequence[int], overrides: Mapping[str, Mapping] | None = None,
              datasets: Sequence[str] = DATASETS, timer: Timer | None = None, verbose: bool = True) -> list[RunParts]:
    """Prepare every (dataset, seed) run and its method parts, timing each stage.

    ``overrides`` maps a dataset to its setting overrides. Whatever is in the store is read, the
    rest computed and stored, so the chapters of Part I share one set of runs. With ``own_world``
    (the default) seed ``s`` runs in the setup's world drawn with seed ``s`` (``seed_setup``).
    With a real source (``tda.experiments.sources``) only "trex" runs (SYNTH is the world's) and
    ``tracin_pt`` is None (no pre-training checkpoints); both are said, not faked.
    """
    timer = timer or Timer()
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(DATASETS))
    if unknown:
        raise ValueError(f"overrides for unknown data sets {unknown}; data sets: {DATASETS}")
    seeds = list(seeds)
    if not seeds:
        raise ValueError("no seeds given")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds repeat: {seeds}; each seed is one independent run")
    if is_source(setup):
        note = "FTRACE-SYNTH is built from the synthetic world's facts: not available with a real source"
        if "synth" in datasets and not (datasets := [d for d in datasets if d != "synth"]):
            raise NotAvailableError(note)
        if verbose:
            print(f"{note}; running {', '.join(datasets)} only. TracIn at pre-training checkpoints: not available "
                  "(the model brings no pre-training checkpoints)", flush=True)
    settings = {d: FtraceSettings.for_world(world, d, overrides.get(d)) for d in datasets}
    setups = {}
    out = []
    for dataset in datasets:
        s = settings[dataset]
        for seed in seeds:
            if (s.own_world, seed) not in setups:
                with timer("world and tokenizer (per seed)", verbose=False):
                    setups[(s.own_world, seed)] = seed_setup(setup, s, seed)
            run = prepare(setups[(s.own_world, seed)], s, seed, timer=timer, verbose=verbose)
            with timer(f"TracIn, fine-tuning checkpoints ({dataset})", verbose=False):
                t_ft = stored_tracin_parts(run, "ft", verbose=verbose)
            with timer(f"TracIn, pre-training checkpoints ({dataset})", verbose=False):
                t_pt = None if is_source(setup) else stored_tracin_parts(run, "pt", verbose=verbose)
            with timer(f"EMBED ({dataset})", verbose=False):
                emb = stored_embed_parts(run, verbose=verbose)
            out.append(RunParts(run, t_ft, t_pt, emb))
    return out


__all__ = ["DATASETS", "SLICES", "POOLINGS", "FtraceSettings", "checkpoint_label", "label_fraction", "seed_setup",
           "build_data", "setup_data", "seq2seq", "data_digest", "FtraceRun", "finetune_attribution_set",
           "select_queries", "prepare", "stored_tracin_parts", "stored_embed_parts", "RunParts", "load_runs"]
