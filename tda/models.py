"""Tokenizer training, the tiny GPT-2 family, and loading any Hugging Face LM.

The tiny models are the scaled-down analogue of the papers' models (Qwen2 0.5B/1.5B/7B in DDA's
model-size study). Dropout is off so that a training step is a deterministic function of the
weights and the batch, and per-example gradients (``tda.gradients``) equal single backwards.

Input and output embeddings are tied by default (GPT-2's own choice). ``tie_embeddings=False``
gives the output layer its own matrix, as mT5 has: FTRACE's "embedding layer" runs take gradients
of mT5's input embedding (``shared``) alone, which in a tied model would also carry the output
layer's share. With untied weights ``tda.gradients``' group ``"embedding"`` is the input embedding
only and ``"head"`` holds ``lm_head``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import torch
from huggingface_hub import try_to_load_from_cache
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers.utils import logging as hf_logging
from transformers import (AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer,
                          GPT2Config, GPT2LMHeadModel, PreTrainedModel, PreTrainedTokenizerFast)

from .locations import SourceNotFoundError, hub_offline, hub_unreachable_reason, resolve

hf_logging.disable_progress_bar()  # "Writing model shards" bars at every checkpoint are noise

PAD, UNK, BOS, EOS = "[PAD]", "[UNK]", "[BOS]", "[EOS]"
MASK_TOKEN = "[MASK]"


@dataclass(frozen=True)
class ModelSize:
    """A named GPT-2 shape. ``d_model`` is the width, ``n_layer`` the number of blocks."""

    name: str
    n_layer: int
    d_model: int
    n_head: int
    analogue: str  # the real model this size stands in for in the book's model-size studies


SIZES: dict[str, ModelSize] = {
    s.name: s for s in (
        ModelSize("tiny", n_layer=2, d_model=64, n_head=2, analogue="Qwen2-0.5B"),
        ModelSize("small", n_layer=4, d_model=128, n_head=4, analogue="Qwen2-1.5B"),
        ModelSize("medium", n_layer=4, d_model=256, n_head=8, analogue="Qwen2-7B"),
    )
}
N_POSITIONS = 256


def train_tokenizer(texts: Iterable[str]) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over whitespace and punctuation, trained on ``texts``.

    Word level keeps one token per name part, so a fact's entity is a few tokens and BM25's
    whitespace words and the model's tokens line up. Trained deterministically (sorted by count,
    then alphabetically by the ``tokenizers`` trainer).
    """
    tok = Tokenizer(models.WordLevel(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(special_tokens=[PAD, UNK, BOS, EOS, MASK_TOKEN], min_frequency=1)
    tok.train_from_iterator(list(texts), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, unk_token=UNK,
                                   bos_token=BOS, eos_token=EOS, mask_token=MASK_TOKEN)
    return fast


def size_of(name: str) -> ModelSize:
    if name not in SIZES:
        raise ValueError(f"unknown model size {name!r}; known sizes: {', '.join(SIZES)}")
    return SIZES[name]


def make_model(size: str, tokenizer: PreTrainedTokenizerFast, seed: int = 0,
               tie_embeddings: bool = True) -> GPT2LMHeadModel:
    """A freshly initialised tiny GPT-2 of a named size; the same seed gives the same weights.

    ``tie_embeddings=False``: the output layer (``lm_head``) gets its own weight matrix, initialised
    as a copy of the input embedding's initial values (so the two variants start from the same
    function, and a tied and an untied model of one seed differ only in what training does).
    """
    spec = size_of(size)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=N_POSITIONS, n_embd=spec.d_model,
        n_layer=spec.n_layer, n_head=spec.n_head,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        # pad_token_id stays None: transformers' padding checks break torch.func.vmap, and the
        # task pads on the right with labels -100, which a causal model never attends back to.
        pad_token_id=None,
        tie_word_embeddings=bool(tie_embeddings),
    )
    config._attn_implementation = "eager"  # faster than SDPA at this size, and vmap-able on CPU
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(config)
    if not tie_embeddings:
        with torch.no_grad():
            model.lm_head.weight.copy_(model.transformer.wte.weight)
    model.eval()
    return model


def embeddings_tied(model: torch.nn.Module) -> bool:
    """Whether the model's output layer shares its weight with the input embedding."""
    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    inp = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    return out is not None and inp is not None and out.weight is inp.weight


def parameter_count(model: torch.nn.Module) -> int:
    """Number of distinct parameters (tied input/output embeddings counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def describe_sizes(tokenizer: PreTrainedTokenizerFast) -> list[dict]:
    """One row per named size: shape and parameter count for this tokenizer's vocabulary."""
    rows = []
    for name, spec in SIZES.items():
        model = make_model(name, tokenizer)
        rows.append({"size": name, "layers": spec.n_layer, "width": spec.d_model, "heads": spec.n_head,
                     "parameters": parameter_count(model), "analogue of": spec.analogue})
    return rows


class ModelLoadError(RuntimeError):
    """A model (or its tokenizer) that cannot be loaded; the message names the source and the reason."""


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:300] if text else ''}"


def _hub_files_only(name: str) -> bool:
    """For a hub name: whether to read only the local cache (offline mode, or the hub unreachable but
    the model cached). Raises ``SourceNotFoundError`` at once when the hub is unreachable and the
    model is not cached, instead of retrying for half a minute."""
    if hub_offline():
        return True
    reason = hub_unreachable_reason()
    if reason is None:
        return False
    if isinstance(try_to_load_from_cache(name, "config.json"), str):
        return True
    raise SourceNotFoundError(f"the model {name!r} cannot be loaded: it is not a local path (nothing at "
                              f"{Path(name).resolve()}) and no copy is in the Hugging Face cache, and the hub "
                              f"{reason}. Give the folder of a saved model (config.json, weights, tokenizer), or "
                              "connect to the network once to cache it")


def load_model(name_or_path: str | Path, kind: str = "auto",
               dtype: torch.dtype | None = None) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """Load any Hugging Face causal or seq2seq LM and its tokenizer, by hub name or local path.

    ``kind`` is "causal", "seq2seq" or "auto" (read from the config's ``is_encoder_decoder``).
    The model is returned in eval mode. Local path or hub name is decided by ``tda.locations``
    (syntax and existence): a local path that does not exist, or that holds no config, raises
    FileNotFoundError naming the path; a hub name that cannot be fetched (hub unreachable and the
    model not cached) raises ``SourceNotFoundError`` (a FileNotFoundError) at once, naming the name
    and the reason. A configuration, weights or tokenizer that do not load raise
    :class:`ModelLoadError` naming the source and the library's reason.
    """
    if kind not in ("causal", "seq2seq", "auto"):
        raise ValueError(f"kind must be 'causal', 'seq2seq' or 'auto', got {kind!r}")
    location = resolve(name_or_path, "model", probe=False)
    if location.is_local:
        local = location.path
        if not (local / "config.json").is_file():
            raise FileNotFoundError(f"{local} has no config.json: not a saved model (or a checkpoint "
                                    "that was never completed)" + (": give the folder that holds config.json"
                                                                   if local.is_file() else ""))
        source, files_only = str(local), False
    else:
        source = location.name
        files_only = _hub_files_only(source)
    try:
        config = AutoConfig.from_pretrained(source, local_files_only=files_only)
    except (OSError, ValueError, KeyError) as err:
        offline = " (offline: only the Hugging Face cache was read)" if files_only else ""
        raise ModelLoadError(f"cannot load the model {source!r}: its configuration did not load "
                             f"({_first_line(err)}){offline}") from err
    if kind == "auto":
        kind = "seq2seq" if getattr(config, "is_encoder_decoder", False) else "causal"
    cls = AutoModelForSeq2SeqLM if kind == "seq2seq" else AutoModelForCausalLM
    kwargs = {"attn_implementation": "eager", "local_files_only": files_only}
    if dtype is not None:
        kwargs["dtype"] = dtype
    try:
        model = cls.from_pretrained(source, **kwargs)
    except Exception as err:  # safetensors, torch and transformers raise several types for broken weights
        raise ModelLoadError(f"could not load the model weights from {source}: {_first_line(err)}") from err
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=files_only)
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise ModelLoadError(f"the model {source!r} loaded but its tokenizer did not ({_first_line(err)}); a "
                             "model folder needs its tokenizer files (tokenizer.save_pretrained(folder))") from err
    if len(tokenizer) <= 1:  # transformers 5 builds an empty tokenizer when the files are missing
        raise ModelLoadError(f"the model {source!r} loaded but its tokenizer did not: no tokenizer files were "
                             f"found (the tokenizer built has {len(tokenizer)} token); a model folder needs its "
                             "tokenizer files (tokenizer.save_pretrained(folder))")
    model.eval()
    return model, tokenizer
