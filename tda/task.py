"""How a model turns one example (prompt + target) into a loss over its target tokens.

Every training loop, gradient feature and representation in the book goes through a task, so the
methods run unchanged on the tiny causal models and on real causal or seq2seq models.

Causal layout (one row): ``[BOS] prompt target [EOS] [PAD]...`` with labels -100 everywhere but
the target and EOS. Padding is on the right and there is no attention mask: a causal model never
attends forward, so padding cannot change the loss, and the per-example function stays free of the
data-dependent masking code that breaks ``torch.func.vmap`` on Hugging Face models.

Seq2seq layout: the encoder reads ``prompt [EOS]`` (with an attention mask, since its attention is
bidirectional); the decoder is trained on ``target [EOS]``.

EOS in the loss. Training keeps the closing EOS as a target token (the model must learn to stop).
Attribution does not: FTRACE's code drops EOS from the target before taking query and training
gradients, and on a query whose answer the model has not learned yet the EOS loss (10-12 nats on
our tiny models) would dominate its gradient. ``target_eos=False`` (``task.without_eos()``) keeps
the encoding unchanged and leaves EOS out of the loss mask only, so every other position's loss is
the same number and the loss is the mean over the answer tokens.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

IGNORE = -100


@dataclass
class Examples:
    """Parallel lists of prompts and targets (a training text is a target with an empty prompt)."""

    prompts: list[str]
    targets: list[str]

    def __post_init__(self) -> None:
        if len(self.prompts) != len(self.targets):
            raise ValueError(f"{len(self.prompts)} prompts but {len(self.targets)} targets")

    def __len__(self) -> int:
        return len(self.targets)

    def subset(self, idx: Sequence[int]) -> "Examples":
        return Examples([self.prompts[i] for i in idx], [self.targets[i] for i in idx])

    @classmethod
    def texts(cls, texts: Sequence[str]) -> "Examples":
        """Plain language-modelling texts: the loss covers every token."""
        return cls([""] * len(texts), list(texts))


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"] if text else []


class _CachedIds:
    """Token ids of a text, computed once (training encodes the same texts every epoch)."""

    def __init__(self, tokenizer, limit: int = 200_000):
        self.tokenizer, self.limit, self.cache = tokenizer, limit, {}

    def __call__(self, text: str) -> list[int]:
        ids = self.cache.get(text)
        if ids is None:
            ids = _ids(self.tokenizer, text)
            if len(self.cache) < self.limit:
                self.cache[text] = ids
        return ids


class CausalLMTask:
    """Loss of a causal LM on the target tokens of prompt + target."""

    is_seq2seq = False

    def __init__(self, tokenizer, max_length: int = 256, target_eos: bool = True):
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no EOS token; the task needs one to end targets")
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.target_eos = bool(target_eos)  # False: the closing EOS is not part of the loss (attribution)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
        self.ids = _CachedIds(tokenizer)

    def without_eos(self) -> "CausalLMTask":
        """The same task with EOS left out of the loss (for attribution gradients and query losses)."""
        other = copy.copy(self)
        other.target_eos = False
        return other

    def _loss_mask(self, labels: torch.Tensor) -> torch.Tensor:
        """Positions whose loss counts: the target, and its closing EOS only when ``target_eos``."""
        mask = labels != IGNORE
        if not self.target_eos:
            mask &= labels != self.tokenizer.eos_token_id
        return mask

    def lengths(self, examples: Examples) -> list[int]:
        """Token count of each example (used to batch examples of similar length together)."""
        return [len(self.ids(p)) + len(self.ids(t)) for p, t in zip(examples.prompts, examples.targets)]

    def encode(self, examples: Examples) -> dict[str, torch.Tensor]:
        """Right-padded ``input_ids`` and ``labels`` (-100 off the target) for a batch."""
        if len(examples) == 0:
            raise ValueError("cannot encode an empty list of examples")
        rows, labels = [], []
        for prompt, target in zip(examples.prompts, examples.targets):
            p = self.bos + self.ids(prompt)
            t = self.ids(target) + [self.tokenizer.eos_token_id]
            if len(t) + len(self.bos) > self.max_length:
                raise ValueError(f"target of {len(t)} tokens does not fit max_length={self.max_length}: "
                                 f"{target[:60]!r}")
            # An over-long prompt loses its end (keeping its start and the whole target).
            p = p[: self.max_length - len(t)]
            rows.append(p + t)
            labels.append([IGNORE] * len(p) + t)
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        label_t = torch.full((len(rows), width), IGNORE, dtype=torch.long)
        for i, (r, lab) in enumerate(zip(rows, labels)):
            input_ids[i, : len(r)] = torch.tensor(r)
            label_t[i, : len(lab)] = torch.tensor(lab)
        return {"input_ids": input_ids, "labels": label_t}

    def logits(self, model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(input_ids=batch["input_ids"]).logits

    def per_token_loss(self, model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss per predicted position [B, T-1], mask of target positions [B, T-1])."""
        logits = self.logits(model, batch)[:, :-1]
        labels = batch["labels"][:, 1:]
        mask = self._loss_mask(labels)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.clamp(min=0).reshape(-1),
                               reduction="none").view(labels.shape)
        return loss * mask, mask

    def per_example_loss(self, model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean negative log-likelihood of each example's target tokens, shape [B]."""
        loss, mask = self.per_token_loss(model, batch)
        return loss.sum(1) / mask.sum(1).clamp(min=1)

    def hidden_states(self, model, batch: dict[str, torch.Tensor]) -> tuple[tuple[torch.Tensor, ...], torch.Tensor, torch.Tensor]:
        """(hidden states per layer, 0 = embedding output; target-position mask; all-token mask)."""
        out = model(input_ids=batch["input_ids"], output_hidden_states=True)
        target = batch["labels"] != IGNORE
        # The last position of each row before padding, found from labels (EOS is a target token).
        lengths = torch.where(target, torch.arange(target.shape[1]), -1).max(1).values + 1
        tokens = torch.arange(target.shape[1])[None, :] < lengths[:, None]
        return out.hidden_states, target, tokens


class Seq2SeqTask(CausalLMTask):
    """Loss of an encoder-decoder LM on ``target [EOS]`` given ``prompt [EOS]``."""

    is_seq2seq = True

    def encode(self, examples: Examples) -> dict[str, torch.Tensor]:
        if len(examples) == 0:
            raise ValueError("cannot encode an empty list of examples")
        eos = self.tokenizer.eos_token_id
        enc = [(self.ids(p) + [eos])[: self.max_length] for p in examples.prompts]
        dec = [self.ids(t)[: self.max_length - 1] + [eos] for t in examples.targets]
        width_e, width_d = max(map(len, enc)), max(map(len, dec))
        input_ids = torch.full((len(enc), width_e), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(enc), width_e), dtype=torch.long)
        labels = torch.full((len(dec), width_d), IGNORE, dtype=torch.long)
        for i, (e, d) in enumerate(zip(enc, dec)):
            input_ids[i, : len(e)] = torch.tensor(e)
            attention[i, : len(e)] = 1
            labels[i, : len(d)] = torch.tensor(d)
        return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}

    def logits(self, model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                     labels=batch["labels"]).logits

    def per_token_loss(self, model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.logits(model, batch)  # decoder inputs are the labels shifted right
        labels = batch["labels"]
        mask = self._loss_mask(labels)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.clamp(min=0).reshape(-1),
                               reduction="none").view(labels.shape)
        return loss * mask, mask

    def hidden_states(self, model, batch):
        """Encoder states then decoder states (0 = each stack's embedding output)."""
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    labels=batch["labels"], output_hidden_states=True)
        states = tuple(out.encoder_hidden_states) + tuple(out.decoder_hidden_states)
        return states, batch["labels"] != IGNORE, batch["attention_mask"].bool()


def task_for(model, tokenizer, max_length: int = 256, target_eos: bool = True) -> CausalLMTask:
    """The task that matches a model: seq2seq for encoder-decoders, causal otherwise."""
    cls = Seq2SeqTask if getattr(model.config, "is_encoder_decoder", False) else CausalLMTask
    return cls(tokenizer, max_length=max_length, target_eos=target_eos)


@torch.no_grad()
def losses(model, task: CausalLMTask, examples: Examples, batch_size: int = 128) -> torch.Tensor:
    """Per-example target loss of every example, in order."""
    out = []
    for start in range(0, len(examples), batch_size):
        batch = task.encode(examples.subset(range(start, min(start + batch_size, len(examples)))))
        out.append(task.per_example_loss(model, batch))
    return torch.cat(out)


@torch.no_grad()
def exact_match(model, task: CausalLMTask, examples: Examples, batch_size: int = 128) -> torch.Tensor:
    """Whether greedy decoding reproduces each target: every target token is the argmax
    prediction given the gold prefix (teacher forcing; the closing EOS is not required)."""
    out = []
    for start in range(0, len(examples), batch_size):
        batch = task.encode(examples.subset(range(start, min(start + batch_size, len(examples)))))
        logits = task.logits(model, batch)
        labels = batch["labels"]
        if not task.is_seq2seq:
            logits, labels = logits[:, :-1], labels[:, 1:]
        eos = task.tokenizer.eos_token_id
        check = (labels != IGNORE) & (labels != eos)
        out.append(((logits.argmax(-1) == labels) | ~check).all(1))
    return torch.cat(out)
