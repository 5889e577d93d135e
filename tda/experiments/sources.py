"""Point a chapter's pipeline at a real data source and a real model (issue 14).

The pipelines of Part I (``tda.experiments.ftrace.pipeline``) and Part II
(``tda.experiments.dda.pipeline``) take a ``setup``: where their data, base model, tokenizer and
store come from. :func:`chapter_setup` gives them one of two:

- the synthetic world (``tda.base.world_setup``), exactly as before, when the data setting is
  ``"synthetic"`` (or None): the default and quick books are unchanged, store keys included;
- a :class:`SourceSetup` for a real source (``tda.data.sources.DataSource``: a local path or a
  hub name) and a model (``tda.model_sources.ModelSource``): the tiny family, initialised fresh
  with a word-level tokenizer trained on the loaded data, or a Hugging Face model (hub name or
  local folder) with its own tokenizer, refused by ``check_tokenizer`` when the two do not fit.

A ``SourceSetup`` has the world setup's interface (``store``, ``task()``, ``world_config``,
``preset``), so the pipelines branch in a few places only, through the functions here that take
either setup: :func:`base_model_dir`, :func:`base_checkpoints`, :func:`load_base`,
:func:`pretrain_config`, :func:`train_on` and the data of each part (:func:`ftrace_data`,
:func:`source_poisoned`). Its ``world_config`` is a :class:`SourceConfig` (the part, the data
setting, the sample and the model), so every store key of a real run names its source and model
and never meets a synthetic run's.

What only the synthetic world has is reported, never faked (:class:`NotAvailableError`):

- Part I: FTRACE-SYNTH (built from the world's facts); which queries' facts were in pre-training
  (the queries' ``known`` column; ``query_info`` says None); TracIn at pre-training checkpoints
  and what the base model answered there (a loaded model brings no pre-training checkpoints; the
  tiny family on real data is not pre-trained at all). The ``known`` *slice* (the model answers
  before fine-tuning) is measured on real data as on the world's.
- Part II: the world's document counts (``n_source``, ``n_target``, the mention shares) are
  settings of the synthetic news only; on real data the genuine target-word documents (the hard
  negatives) are *counted* (``PoisonedData.genuine``), and ``n_train``, ``n_test_source`` and
  ``n_test_other`` are exact counts drawn from the loaded split (an error names both numbers when
  the data has fewer).

Device: with a real source, fine-tuning runs on ``device`` (``tda.devices.pick_device``);
gradients, generation and the label check's retraining stay on the CPU (``tda.devices``). The
synthetic world's chapters always train on the CPU, so their numbers stay the published ones.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Mapping

import torch
from datasets import Dataset
from transformers import AutoConfig, AutoTokenizer

from .. import base
from ..checkpoints import list_checkpoints, load_checkpoint, save_checkpoint
from ..data import ftrace as ft
from ..data import xsum
from ..data.sources import DataSource, load_ftrace_source, load_xsum_source, load_xsum_splits, restrict_ftrace
from ..devices import on_device, pick_device
from ..model_sources import ModelSource
from ..seeds import derive_seed
from ..store import Store, text_digest
from ..task import task_for
from ..train import train

PARTS = ("ftrace", "xsum")
SOURCE_FORMAT = 1  # bump when what a source setup's artifacts hold changes
SAMPLE_FIELDS = ("n_queries", "n_abstracts")  # restrict_ftrace's sizes (ftrace_sample)
# The poisoning's words are always in a tiny model's vocabulary: a target word that never occurs in
# the loaded data would otherwise be [UNK] in every poisoned summary.
POISON_WORDS = ("England", "China")


class NotAvailableError(ValueError):
    """Something that only the synthetic world has, asked of a real source (the message says what
    and why)."""


@dataclass(frozen=True)
class SourceConfig:
    """What a source setup's artifacts depend on; stands where a world setup's ``WorldConfig`` is,
    so ``tda.base.world_params`` puts it into every store key."""

    part: str
    data: dict
    model: dict
    sample: dict | None = None
    format: int = SOURCE_FORMAT


@dataclass(frozen=True)
class NoPretraining:
    """What stands in a store key where a world setup has the base model's pre-training recipe."""

    model: str
    note: str = "no pre-training in this run: the model is used as loaded (tiny: freshly initialised)"


@dataclass
class SourceSetup:
    """A real data source and a model, with the interface the pipelines use of a world setup.

    ``part``: "ftrace" (Part I) or "xsum" (Part II); ``preset``: the world of params.yml whose
    settings the chapter reads (the pipelines' ``for_world``); ``sample``: Part I's
    ``restrict_ftrace`` sizes, drawn per seed (None: every query with proponents and abstract).
    """

    part: str
    data: DataSource
    model: ModelSource
    store: Store
    preset: str = "real"
    sample: dict | None = None
    device: str = "cpu"
    has_pretraining: bool = field(default=False, init=False)  # no pre-training checkpoints at hand
    _base: Path | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.part not in PARTS:
            raise ValueError(f"part must be one of {PARTS}, got {self.part!r}")
        if self.data.synthetic:
            raise ValueError("a SourceSetup needs a real data source; the synthetic world is tda.base.world_setup")
        self.sample = check_sample(self.sample) if self.part == "ftrace" else None
        pick_device(self.device)  # a clear error for an unknown device, or cuda without one

    # -- what a world setup has --------------------------------------------------------------
    @property
    def world_config(self) -> SourceConfig:
        model = {**self.model.describe(), "files": model_files(self.model)}
        return SourceConfig(self.part, self.data.describe(), model, self.sample)

    @property
    def world(self):
        raise NotAvailableError(f"the {self.part} source {self.data.location} is real data: there is no synthetic "
                                "world behind it (its facts, news and pre-training corpus exist only in the synthetic "
                                "setup)")

    @property
    def size(self) -> str:
        """The model's name in tables and run labels: the tiny family's size, else the model's name."""
        return self.model.size if self.model.tiny else Path(self.model.name).name

    @cached_property
    def tokenizer(self):
        return AutoTokenizer.from_pretrained(list_checkpoints(self.base_dir())[0])

    @cached_property
    def is_seq2seq(self) -> bool:
        """Whether the model is an encoder-decoder, read from its configuration (the tiny family: no)."""
        if self.model.tiny:
            return False
        where = list_checkpoints(self._base)[0] if self._base is not None else self.model.name
        try:
            config = AutoConfig.from_pretrained(where)
        except OSError:  # not readable as it is (offline, not cached): loading says why, naming the model
            config = AutoConfig.from_pretrained(list_checkpoints(self.base_dir())[0])
        return bool(getattr(config, "is_encoder_decoder", False))

    def task(self, max_length: int = 256):
        """The model's task (causal or seq2seq, ``tda.task.task_for``) with its own tokenizer."""
        return task_for(_ConfigOnly(self.is_seq2seq), self.tokenizer, max_length=max_length)

    # -- data ------------------------------------------------------------------------------
    @cached_property
    def loaded(self):
        """The whole source as loaded: ``FtraceData`` (Part I) or an XSum ``Dataset`` (Part II: the
        source's split, which a tiny model's tokenizer is trained on; the runs split it per seed)."""
        if self.part == "ftrace":
            return load_ftrace_source(self.data, synthetic=_no_world)
        return load_xsum_source(self.data, synthetic=_no_world)

    def tokenizer_texts(self) -> list[str]:
        """What a tiny model's tokenizer is trained on: every text of the loaded source."""
        if self.part == "ftrace":
            q, a = self.loaded
            return _texts(ft.to_examples(a)) + _texts(ft.to_examples(q))
        return _texts(xsum.to_examples(self.loaded)) + list(POISON_WORDS)

    # -- the base model --------------------------------------------------------------------
    def base_dir(self) -> Path:
        """The store entry holding the model as loaded, as checkpoint ``epoch-000`` (a tiny model:
        freshly initialised, its tokenizer trained on :meth:`tokenizer_texts`). Looked up once per setup
        (the tokenizer's texts are hashed for the key: the whole source)."""
        if self._base is not None and self._base.is_dir():
            return self._base
        texts = self.tokenizer_texts() if self.model.tiny else None
        params = {"model": self.model.describe(), "files": model_files(self.model), "format": SOURCE_FORMAT,
                  "tokenizer_texts": text_digest(texts) if texts is not None else None}
        init_seed = derive_seed(0, "source-model-init") % (2**31)

        def build(work: Path) -> None:
            model, tokenizer = self.model.load(texts=texts, seed=init_seed)
            state = {"epoch": 0, "step": 0, "epoch_losses": [], "source_model": self.model.describe()}
            save_checkpoint(model, tokenizer, None, [], state, work / "epoch-000")

        self._base = self.store.get_or_create("source-base", params, build)
        return self._base


class _ConfigOnly:
    """Just enough of a model for ``task_for`` (which reads ``config.is_encoder_decoder``)."""

    def __init__(self, seq2seq: bool):
        self.config = type("Config", (), {"is_encoder_decoder": seq2seq})()


def _texts(examples) -> list[str]:
    return [f"{p} {t}".strip() for p, t in zip(examples.prompts, examples.targets)]


def _no_world():
    raise NotAvailableError("a source setup reads a real source, not the synthetic world")


def model_files(model: ModelSource) -> dict | None:
    """Name and size of every file of a local model folder (None for the tiny family or a hub name),
    so a folder whose weights changed never reuses an artifact of the old ones."""
    if model.tiny or not Path(model.name).is_dir():
        return None
    folder = Path(model.name)
    return {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file()}


def check_sample(sample: Mapping | None) -> dict | None:
    """``ftrace_sample`` as a dict of ``restrict_ftrace`` sizes (None: the whole source)."""
    if sample is None:
        return None
    if not isinstance(sample, Mapping):
        raise ValueError(f"ftrace_sample must be a mapping {{n_queries: ..., n_abstracts: ...}} or None, got "
                         f"{sample!r}")
    unknown = sorted(set(sample) - set(SAMPLE_FIELDS))
    if unknown or "n_queries" not in sample:
        raise ValueError(f"ftrace_sample: fields are {', '.join(SAMPLE_FIELDS)} (n_queries required), got "
                         f"{dict(sample)}")
    return {k: sample[k] for k in SAMPLE_FIELDS if k in sample}


def is_source(setup) -> bool:
    """Whether ``setup`` reads a real source (else it is the synthetic world's ``tda.base.Setup``)."""
    return isinstance(setup, SourceSetup)


def chapter_setup(part: str, world: str = "default", world_overrides: Mapping | None = None, source: Any = None,
                  model: Any = None, sample: Mapping | None = None, device: str = "cpu", size: str = "tiny",
                  store: Store | None = None):
    """The setup a chapter's pipeline runs on (a notebook's one call).

    ``source`` None or "synthetic": the synthetic world ``world`` (``tda.base.world_setup``), and
    then ``model`` and ``sample`` must be None (the world's chapters run the tiny family pre-trained
    on the world, at the size their settings name) and ``device`` "cpu" or "auto" (the world's
    chapters train on the CPU). Otherwise a :class:`SourceSetup`: ``model`` None is the tiny family
    of ``size``.
    Bad settings fail here, naming the setting: a relative path that does not exist is refused as a
    path, not sent to the hub (``tda.locations``).
    """
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}, got {part!r}")
    names = {"ftrace": ("ftrace_source", "ftrace_model"), "xsum": ("xsum_source", "xsum_model")}[part]
    data = DataSource.parse(source, names[0])
    if data.synthetic:
        given = {names[1]: model, "ftrace_sample": sample}
        extra = [k for k, v in given.items() if v is not None]
        if extra:
            raise ValueError(f"{', '.join(extra)} applies to a real {names[0]}, not the synthetic world (whose "
                             f"chapters run the tiny family pre-trained on the world): set {names[0]} or leave "
                             f"{extra[0]} None")
        if str(device) not in ("cpu", "auto"):
            raise ValueError(f"device {device!r}: the synthetic world's chapters train on the CPU (their numbers are "
                             "the published ones); device applies to a real source")
        return base.world_setup(world, world_overrides, store=store)
    if world_overrides:
        raise ValueError(f"world_overrides {dict(world_overrides)} change the synthetic world, but {names[0]} is a "
                         "real source")
    if sample is not None and part != "ftrace":
        raise ValueError("ftrace_sample applies to Part I's FTRACE source only")
    model = ModelSource.parse(model if model is not None else size, names[1])
    return SourceSetup(part, data, model, store or Store(), preset=world,
                       sample=sample, device=str(device))


def run_size(setup, size: str) -> str:
    """The model name a chapter's runs carry: ``size`` on the synthetic world, the source's model else."""
    return setup.size if is_source(setup) else size


# ---------------------------------------------------------------------------------------------
# the functions the pipelines call with either setup
# ---------------------------------------------------------------------------------------------
def pretrain_config(setup, size: str, overrides: Mapping | None = None):
    """``tda.base.pretrain_config``; for a source setup a :class:`NoPretraining` (overrides refused)."""
    if not is_source(setup):
        return base.pretrain_config(setup, size, overrides)
    if overrides:
        raise NotAvailableError(f"pre-training settings {dict(overrides)}: the {setup.size} model of a real source is "
                                "not pre-trained here (a loaded model is used as it is)")
    return NoPretraining(setup.size)


def base_model_dir(setup, size: str, pretrain: Mapping | None = None, tie_embeddings: bool = True,
                   early_checkpoints=()) -> Path:
    """``tda.base.base_model_dir``; for a source setup its model as loaded (``SourceSetup.base_dir``:
    the model setting decides the shape; ``size`` and ``tie_embeddings`` are the world's)."""
    if not is_source(setup):
        return base.base_model_dir(setup, size, pretrain, tie_embeddings, early_checkpoints)
    pretrain_config(setup, size, pretrain)
    return setup.base_dir()


def base_checkpoints(setup, size: str, pretrain: Mapping | None = None, **kind) -> list[Path]:
    return list_checkpoints(base_model_dir(setup, size, pretrain, **kind))


def load_base(setup, size: str, pretrain: Mapping | None = None, **kind):
    """(model, tokenizer) of the base model (``tda.base.load_base`` on the world)."""
    return load_checkpoint(base_checkpoints(setup, size, pretrain, **kind)[-1])


def check_pretraining(setup, what: str) -> None:
    """Raise :class:`NotAvailableError` for ``what`` (pre-training checkpoints) with a source setup."""
    if is_source(setup) and not setup.has_pretraining:
        raise NotAvailableError(f"{what}: not available for the {setup.size} model on {setup.data.location}; its "
                                "pre-training checkpoints are not at hand (a loaded model brings none; the tiny family "
                                "on real data is not pre-trained)")


def train_on(setup, model, tokenizer, examples, out_dir, config, **kwargs) -> dict:
    """``tda.train.train`` with the setup's task, on the setup's device (a source setup's
    ``device``; the synthetic world's chapters on the CPU)."""
    device = pick_device(setup.device) if is_source(setup) else torch.device("cpu")
    model.to(device)
    try:
        return train(model, tokenizer, on_device(setup.task(), device), examples, out_dir, config, **kwargs)
    finally:
        model.to("cpu")


# -- Part I --------------------------------------------------------------------------------------
def ftrace_data(setup, s, seed: int) -> ft.FtraceData:
    """A source setup's FTRACE data for a run: the loaded source, restricted per ``seed`` to the
    ``ftrace_sample`` sizes (``restrict_ftrace``). ``s``: the run's ``FtraceSettings``; settings that
    sample the synthetic world's facts are refused."""
    if setup.is_seq2seq:
        raise NotAvailableError(f"{setup.model.name} is an encoder-decoder: Part I's learned slice decodes its queries "
                                "with a beam search (tda.decode.beam_search) that handles causal models only so far; "
                                "use a causal model or the tiny family for ftrace_model")
    if s.dataset != "trex":
        raise NotAvailableError(f"FTRACE-{s.dataset.upper()} is built from the synthetic world's facts: not available "
                                f"with the real source {setup.data.location} (its data set is 'trex')")
    world_only = {k: getattr(s, k) for k in ("n_queries", "known_share", "relations") if getattr(s, k) is not None}
    if world_only:
        raise NotAvailableError(f"FTRACE settings {world_only} sample the synthetic world's facts; with a real source "
                                "the queries are ftrace_sample's n_queries (tda.data.sources.restrict_ftrace)")
    data = setup.loaded
    if setup.sample is None:
        return data
    return restrict_ftrace(data, setup.sample["n_queries"], setup.sample.get("n_abstracts"), seed=seed)


# -- Part II -------------------------------------------------------------------------------------
def source_poisoned(setup, s, seed: int):
    """A source setup's Part II data for a run: ``(train, prompts, clean_test, PoisonReport)``.

    The loaded documents are split (``load_xsum_splits``: a held-out share of the documents
    whose summary names the source word, and of the others, per ``seed``); ``n_train`` training
    documents are drawn from the held-in ones, ``n_poison`` of their source-word summaries
    poisoned (``tda.data.xsum.poison``); the prompts are ``n_test_source`` held-out documents whose
    summary names the source word and whose article never names the target word, and the clean
    test set those prompts plus ``n_test_other`` other held-out documents. Counts are exact: too
    few documents is an error naming both numbers. ``s``: the run's ``DDASettings``.
    """
    tokenizer = setup.tokenizer
    for word in (s.source_word, s.target_word):
        if tokenizer.unk_token_id is not None and tokenizer.unk_token_id in tokenizer(word, add_special_tokens=False)[
                "input_ids"]:
            raise ValueError(f"the word {word!r} is unknown to the {setup.size} model's tokenizer: its summaries could "
                             "not name it")
    splits = load_xsum_splits(setup.data, synthetic=_no_world, word=s.source_word, seed=derive_seed(seed, "xsum-split"))
    rng = random.Random(derive_seed(seed, "xsum-draw"))
    held_in = splits["train"]
    rows = _draw(rng, range(len(held_in)), s.n_train, "n_train", "held-in documents")
    # a fresh table, not a selection: poisoning would flatten a selection's indices (with a progress bar)
    train_docs = Dataset.from_dict(held_in[rows], features=held_in.features)
    train_set, report = xsum.poison(train_docs, s.source_word, s.target_word, n=s.n_poison,
                                    seed=derive_seed(seed, "poison"), return_report=True,
                                    unsupported_only=s.unsupported_only)
    test = splits["test"]
    naming = [i for i, (d, t) in enumerate(zip(test["document"], test["summary"]))
              if xsum.contains_word(t, s.source_word) and not xsum.contains_word(d, s.target_word)]
    prompts = _draw(rng, naming, s.n_test_source, "n_test_source",
                    f"held-out documents whose summary names {s.source_word!r} and whose article never names "
                    f"{s.target_word!r}")
    others = [i for i in range(len(test)) if not xsum.contains_word(test[i]["summary"], s.source_word)]
    other = _draw(rng, others, s.n_test_other, "n_test_other",
                  f"held-out documents whose summary does not name {s.source_word!r}")
    return train_set, test.select(prompts), test.select(sorted(prompts + other)), report


def _draw(rng: random.Random, rows, n: int, name: str, what: str) -> list[int]:
    rows = list(rows)
    if n > len(rows):
        raise ValueError(f"DDA setting {name}={n}, but the source has only {len(rows)} {what}: lower {name} or load "
                         "more documents (the source's limit)")
    return sorted(rng.sample(rows, n))


__all__ = ["PARTS", "SOURCE_FORMAT", "POISON_WORDS", "NotAvailableError", "SourceConfig", "NoPretraining",
           "SourceSetup", "model_files", "check_sample", "is_source", "chapter_setup", "run_size", "pretrain_config",
           "base_model_dir", "base_checkpoints", "load_base", "check_pretraining", "train_on", "ftrace_data",
           "source_poisoned"]
