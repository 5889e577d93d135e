"""Which model a chapter runs: the tiny family or a real Hugging Face model, each with a fitting tokenizer.

A chapter's model setting is one string (or a small mapping, see :meth:`ModelSource.parse`):

- ``"tiny"``, ``"small"``, ``"medium"``: the tiny GPT-2 family (``tda.models``). On the synthetic
  world the pipelines use their pre-trained base models and the world's tokenizer, as today; on a
  real source the model is initialised fresh with a word-level tokenizer trained on the loaded
  text (:func:`train_text_tokenizer`; the world's tokenizer turns much of real text into [UNK]);
- a Hugging Face model name or a local folder (``config.json``, weights, tokenizer files): loaded
  with ``tda.models.load_model``, always with its own tokenizer.

A tokenizer that does not belong to a model — the world's tokenizer handed to a real model, or
another model's — is refused by :func:`check_tokenizer` with the reason (sizes, special tokens,
or the first token whose id differs), before any step can run on wrong ids.
"""

from __future__ import annotations

import shutil
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from .locations import resolve
from .models import BOS, EOS, MASK_TOKEN, PAD, SIZES, UNK, load_model, make_model

TINY = "tiny"
PRETRAINED = "pretrained"
FIELDS = ("source", "tie_embeddings", "vocab_size", "min_frequency")
# Real tokenizers cover nearly all of their model's embedding rows (rows are padded to a multiple of
# 64 or 128: GPT-2 50257/50257, Qwen2 151665/151936, T5 32100/32128); the world's tokenizer has a
# few thousand words against tens of thousands of rows.
MIN_COVERAGE = 0.9
SPECIAL_IDS = ("eos_token_id", "bos_token_id", "pad_token_id")


class TokenizerMismatchError(ValueError):
    """A tokenizer that does not belong to the model it is used with (the message says how)."""


class ModelSourceError(ValueError):
    """A model setting that cannot be read (the message names the setting and the value)."""


def train_text_tokenizer(texts: Iterable[str], vocab_size: int = 32_000, min_frequency: int = 1
                         ) -> PreTrainedTokenizerFast:
    """A word-level tokenizer (whitespace and punctuation, as the world's) trained on real text.

    The world's ``tda.models.train_tokenizer`` keeps every word it sees; on real text (1.56M
    abstracts) that is millions of words, so here the vocabulary keeps the ``vocab_size`` most
    frequent words seen at least ``min_frequency`` times (ties alphabetically: deterministic), and
    the rest become [UNK]. Special tokens are the world's ([PAD], [UNK], [BOS], [EOS], [MASK]).
    """
    if vocab_size < 6:
        raise ValueError(f"vocab_size must leave room for the 5 special tokens and a word, got {vocab_size}")
    if min_frequency < 1:
        raise ValueError(f"min_frequency must be >= 1, got {min_frequency}")
    texts = list(texts)
    if not any(t.strip() for t in texts):
        raise ValueError("no text to train a tokenizer on: the data is empty")
    tok = Tokenizer(models.WordLevel(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                        special_tokens=[PAD, UNK, BOS, EOS, MASK_TOKEN])
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, unk_token=UNK, bos_token=BOS,
                                   eos_token=EOS, mask_token=MASK_TOKEN)


def unk_rate(tokenizer, texts: Sequence[str]) -> float:
    """The share of tokens of ``texts`` that ``tokenizer`` maps to its unknown token (0 without one)."""
    unk = tokenizer.unk_token_id
    counts: Counter = Counter()
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        counts["all"] += len(ids)
        counts["unk"] += sum(1 for i in ids if i == unk) if unk is not None else 0
    return counts["unk"] / counts["all"] if counts["all"] else 0.0


def _ids(value) -> set[int]:
    if value is None:
        return set()
    return {int(v) for v in value} if isinstance(value, (list, tuple)) else {int(value)}


def check_tokenizer(model: torch.nn.Module, tokenizer, reference=None, name: str = "the model",
                    min_coverage: float = MIN_COVERAGE, special: bool = True) -> None:
    """Refuse a tokenizer that does not belong to ``model`` (raises :class:`TokenizerMismatchError`).

    Checked: the tokenizer has no more tokens than the model's input embedding has rows, and at
    least ``min_coverage`` of them (a much smaller vocabulary was made for another model); the
    model's special token ids (``eos``, ``bos``, ``pad`` in its config) are the tokenizer's; and,
    given ``reference`` (the model's own tokenizer), the two have the same vocabulary, id for id.
    ``special=False`` skips the special-token check (a published model's own tokenizer is trusted
    there: some configs list other special ids than their tokenizers and work).
    """
    rows = int(model.get_input_embeddings().weight.shape[0])
    n = len(tokenizer)
    problems = []
    if n > rows:
        problems.append(f"the tokenizer has {n} tokens but the model's input embedding has {rows} rows "
                        f"(token ids {rows}..{n - 1} have no embedding)")
    elif n < min_coverage * rows:
        problems.append(f"the tokenizer has {n} tokens, only {n / rows:.1%} of the model's {rows} embedding "
                        "rows: it was made for another model")
    config = getattr(model, "config", None)
    for attr in SPECIAL_IDS if special else ():
        expected = _ids(getattr(config, attr, None))
        got = getattr(tokenizer, attr, None)
        if expected and got is not None and int(got) not in expected:
            token = attr.removesuffix("_token_id")
            problems.append(f"the model's {token.upper()} is id {sorted(expected)} (config.{attr}) but the "
                            f"tokenizer's {token.upper()} {getattr(tokenizer, token + '_token', '?')!r} is id {got}")
    if reference is not None:
        mine, theirs = tokenizer.get_vocab(), reference.get_vocab()
        if mine != theirs:
            differ = sorted(t for t in set(mine) | set(theirs) if mine.get(t) != theirs.get(t))
            first = min(differ, key=lambda t: min(mine.get(t, 1 << 62), theirs.get(t, 1 << 62)))
            problems.append(f"its vocabulary is not the model's own: {len(differ)} tokens differ, e.g. {first!r} "
                            f"is id {mine.get(first)} here and id {theirs.get(first)} in the model's tokenizer")
    if problems:
        raise TokenizerMismatchError(f"the tokenizer does not belong to {name}: " + "; ".join(problems) +
                                     ". Use the model's own tokenizer (ModelSource.load returns it), or the tiny "
                                     "family with a tokenizer trained on the data")


@dataclass(frozen=True)
class ModelSource:
    """A resolved model setting: ``kind`` "tiny" (``size`` names the shape) or "pretrained"
    (``name``: hub name or local folder). ``tie_embeddings``, ``vocab_size`` and
    ``min_frequency`` shape a tiny model and its tokenizer on real text."""

    kind: str = TINY
    size: str = "tiny"
    name: str | None = None
    tie_embeddings: bool = True
    vocab_size: int = 32_000
    min_frequency: int = 1

    def __post_init__(self) -> None:
        if self.kind not in (TINY, PRETRAINED):
            raise ModelSourceError(f"model source kind must be {TINY!r} or {PRETRAINED!r}, got {self.kind!r}")
        if self.kind == TINY and self.size not in SIZES:
            raise ModelSourceError(f"unknown tiny model size {self.size!r}; known sizes: {', '.join(SIZES)}")
        if (self.kind == PRETRAINED) != (self.name is not None):
            raise ModelSourceError(f"a {self.kind} model source {'needs' if self.kind == PRETRAINED else 'takes no'} "
                                   f"name (got {self.name!r})")

    @property
    def tiny(self) -> bool:
        return self.kind == TINY

    @classmethod
    def parse(cls, value: "str | Path | Mapping[str, Any] | ModelSource | None", what: str = "model source",
              base: str | Path | None = None) -> "ModelSource":
        """A setting as a ``ModelSource``: None or a tiny size name; a hub name or local folder; or a
        mapping ``{source: ..., tie_embeddings: ..., vocab_size: ..., min_frequency: ...}``. A local
        path that does not exist raises ``SourceNotFoundError`` at once, naming it (a hub name is
        checked when it is loaded: it may be in the cache)."""
        if isinstance(value, ModelSource):
            return value
        options: dict[str, Any] = {}
        if isinstance(value, Mapping):
            unknown = sorted(set(value) - set(FIELDS))
            if unknown:
                raise ModelSourceError(f"{what}: unknown field(s) {unknown}; the fields are {', '.join(FIELDS)}")
            options = {k: v for k, v in value.items() if k != "source"}
            value = value.get("source")
        if value is None:
            return cls(TINY, **options)
        if not isinstance(value, (str, Path)):
            raise ModelSourceError(f"{what} must be a tiny size ({', '.join(SIZES)}), a hub name or a local "
                                   f"folder, got {type(value).__name__} {value!r}")
        if isinstance(value, str) and value in SIZES:
            return cls(TINY, size=value, **options)
        location = resolve(value, "model", probe=False, base=base)
        name = str(location.path.resolve()) if location.is_local else location.name
        return cls(PRETRAINED, name=name, **options)

    def load(self, texts: Iterable[str] | None = None, tokenizer=None, seed: int = 0):
        """``(model, tokenizer)``, the model in eval mode.

        Tiny: a fresh model of ``size`` (weights from ``seed``) with ``tokenizer`` if given, else a
        tokenizer trained on ``texts`` (:func:`train_text_tokenizer`). Pretrained: the model and its
        own tokenizer; a ``tokenizer`` handed in must be that one (else TokenizerMismatchError).
        """
        if self.tiny:
            if tokenizer is None:
                if texts is None:
                    raise ValueError("a tiny model on real data needs texts to train its tokenizer on "
                                     "(or a tokenizer)")
                tokenizer = train_text_tokenizer(texts, self.vocab_size, self.min_frequency)
            model = make_model(self.size, tokenizer, seed=seed, tie_embeddings=self.tie_embeddings)
            check_tokenizer(model, tokenizer, name=f"the {self.size} model")
            return model, tokenizer
        model, own = load_model(self.name)
        if tokenizer is not None:
            check_tokenizer(model, tokenizer, reference=own, name=self.name)
        check_tokenizer(model, own, name=self.name, min_coverage=0.0, special=False)  # ids within the embedding
        return model, own

    def describe(self) -> dict:
        """The setting as plain values (for store keys and results)."""
        return asdict(self)


def save_model(model, tokenizer, folder: str | Path) -> Path:
    """Save a model and its tokenizer in Hugging Face format (what ``load_model`` reads); the folder
    appears complete or not at all (written under ``<folder>.partial`` and renamed)."""
    folder = Path(folder)
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    if folder.exists():
        shutil.rmtree(folder)
    partial.rename(folder)
    return folder


__all__ = ["TINY", "PRETRAINED", "TokenizerMismatchError", "ModelSourceError", "ModelSource", "train_text_tokenizer",
           "unk_rate", "check_tokenizer", "save_model"]
