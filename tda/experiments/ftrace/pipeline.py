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
``notebooks/params.yml`` (section ``worlds``), with the reasons they were chosen. In short:

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
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from ...base import base_checkpoints, base_model_dir, pretrain_config, world_params
from ...checkpoints import list_checkpoints, load_checkpoint, run_problems
from ...data import ftrace as ft
from ...methods.embed import EmbedParts, embed_parts
from ...methods.tracin import TracInParts, tracin_parts
from ...params import unknown_settings, world_settings
from ...progress import Timer
from ...seeds import derive_seed
from ...store import text_digest
from ...train import BATCH_ORDER, TrainConfig, train

DATASETS = ("trex", "synth")
SLICES = ("learned", "known", "other")
POOLINGS = ("tokens", "target")  # EMBED's poolings stored per run


# ---------------------------------------------------------------------------------------------
# settings
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FtraceSettings:
    """Everything that defines a run besides the world and the seed (defaults: the default world's
    TREx analogue)."""

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
    max_learned: int | None = 30
    max_known: int | None = 15
    max_other: int | None = 10
    on_missing: str = "error"  # a query without proponent: "error" or "skip" (counted)
    # candidate sets (paper: k=100..250, m=100, r=100 over 1.5M abstracts)
    k: int = 100
    m: int = 100
    r: int = 100
    # fine-tuning
    epochs: int = 10
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
        named = world_settings(world, "ftrace").get(dataset) or {}
        unknown_settings(named, known, f"FTRACE settings in params.yml (world {world!r}, {dataset})")
        overrides = dict(overrides or {})
        unknown_settings(overrides, known, "FTRACE settings")
        if overrides.get("dataset", dataset) != dataset or named.get("dataset", dataset) != dataset:
            raise ValueError("the dataset is chosen by the argument, not by a setting")
        return replace(cls(**{**named, "dataset": dataset}), **overrides)

    def train_config(self, seed: int) -> TrainConfig:
        return TrainConfig(epochs=self.epochs, lr=self.lr, batch_size=self.batch_size,
                           schedule=self.schedule, warmup_steps=self.warmup_steps, seed=seed)


# ---------------------------------------------------------------------------------------------
# data
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
        return pick_checkpoints(list_checkpoints(self.finetune_dir), self.settings.n_checkpoints)

    def pretrain_checkpoints(self) -> list[Path]:
        return pick_checkpoints(list_checkpoints(self.base_dir), self.settings.n_checkpoints)

    def checkpoints(self, which: str) -> list[Path]:
        if which == "ft":
            return self.finetune_checkpoints()
        if which == "pt":
            return self.pretrain_checkpoints()
        raise ValueError(f"checkpoints are 'ft' (fine-tuning) or 'pt' (pre-training), got {which!r}")

    def final_model_dir(self) -> Path:
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

    def query_info(self) -> pd.DataFrame:
        """One row per attributed query: slice, whether known in pre-training, losses, relation."""
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


# ---------------------------------------------------------------------------------------------
# the stages of a run
# ---------------------------------------------------------------------------------------------
def _finetune_key(setup, s: FtraceSettings, seed: int, data: ft.FtraceData) -> dict:
    """Everything a fine-tuning run depends on (and nothing else, so other settings can change)."""
    return {**world_params(setup.world_config), "size": s.size,
            "pretrain": asdict(pretrain_config(setup, s.size, s.pretrain)), "seed": seed,
            "data": data_digest(data), "train": asdict(s.train_config(seed)), "dataset": s.dataset,
            "batch_order": BATCH_ORDER}


def finetune_attribution_set(setup, s: FtraceSettings, seed: int, data: ft.FtraceData | None = None) -> Path:
    """The fine-tuning run of a dataset (checkpoint + AdamW state per epoch), from the store if there.

    Training data: the attribution set, as causal cloze examples (``to_examples``). The run starts
    from the fully pre-trained base model and uses the seed for its batch order.
    """
    data = data if data is not None else build_data(setup.world, s, seed)
    key = _finetune_key(setup, s, seed, data)

    def build(work: Path) -> None:
        model, tokenizer = load_checkpoint(base_checkpoints(setup, s.size, s.pretrain)[-1])
        train(model, tokenizer, setup.task(), ft.to_examples(data.abstracts), work, s.train_config(seed),
              desc=f"fine-tune {s.dataset} (seed {seed})")

    return setup.store.get_or_create("ftrace-finetune", key, build, resumable=True, check=run_problems)


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
    rng = random.Random(derive_seed(seed, "ftrace-select"))
    chosen: list[int] = []
    for name, cap in (("learned", s.max_learned), ("known", s.max_known), ("other", s.max_other)):
        rows = [i for i in range(n) if names[i] == name and (eligible is None or eligible[i])]
        chosen += rows if cap is None or cap >= len(rows) else rng.sample(rows, cap)
    chosen.sort()
    return chosen, [names[i] for i in chosen]


def prepare(setup, s: FtraceSettings, seed: int, timer: Timer | None = None, verbose: bool = True) -> FtraceRun:
    """Build (or load) everything of one run up to the candidate sets."""
    timer = timer or Timer()
    with timer(f"data ({s.dataset})", verbose=False):
        data = build_data(setup.world, s, seed)
    with timer(f"base model ({s.size})", verbose=False):
        base_dir = base_model_dir(setup, s.size, s.pretrain)
    with timer(f"fine-tuning ({s.dataset})", verbose=False):
        ft_dir = finetune_attribution_set(setup, s, seed, data)
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
    computed once and kept in the store."""
    ckpts = run.checkpoints(which)
    qj, cc = run.pairs()
    params = {**_parts_key(run), "which": which, "checkpoints": [str(c.name) for c in ckpts]}

    def build(work: Path) -> None:
        if verbose:
            print(f"TracIn parts: {run.settings.dataset} seed {run.seed}, {which} checkpoints "
                  f"{[c.name for c in ckpts]}, {len(run.query_rows)} queries x {len(run.union)} candidates",
                  flush=True)
        tracin_parts(ckpts, run.setup.task(), run.query_examples(), run.candidate_examples(), by_unit=True,
                     pairs=(qj, cc), correction="available", batch_size=run.settings.grad_batch_size,
                     desc=f"{run.settings.dataset}/{which}").save(work)

    return TracInParts.load(run.setup.store.get_or_create("ftrace-tracin", params, build), qj, cc)


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
        s = FtraceSettings.for_world(world, dataset, overrides.get(dataset))
        for seed in seeds:
            run = prepare(setup, s, seed, timer=timer, verbose=verbose)
            with timer(f"TracIn, fine-tuning checkpoints ({dataset})", verbose=False):
                t_ft = stored_tracin_parts(run, "ft", verbose=verbose)
            with timer(f"TracIn, pre-training checkpoints ({dataset})", verbose=False):
                t_pt = stored_tracin_parts(run, "pt", verbose=verbose)
            with timer(f"EMBED ({dataset})", verbose=False):
                emb = stored_embed_parts(run, verbose=verbose)
            out.append(RunParts(run, t_ft, t_pt, emb))
    return out


__all__ = ["DATASETS", "SLICES", "POOLINGS", "FtraceSettings", "SYNTH_SLOT_DENSITY", "synth_entity_count",
           "build_data", "data_digest", "pick_checkpoints", "FtraceRun", "finetune_attribution_set", "select_queries",
           "prepare", "stored_tracin_parts", "stored_embed_parts", "RunParts", "load_runs"]
