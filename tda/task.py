"""How a model turns one example (prompt + target) into a loss over its target tokens.

Every training loop, gradient feature and representation in the book goes through a task, so the
methods run unchanged on the tiny causal models and on real causal or seq2seq models.

Causal layout (one row): ``[BOS] prompt target [EOS] [PAD]...`` with labels -100 everywhere but
the target and EOS. Padding is on the right and there is no attention mask: a causal model never
attends forward, so padding cannot change the loss, and the per-example function stays free of the
data-dependent masking code that breaks ``torch.func.vmap`` on Hugging Face models.

Seq2seq layout: the encoder reads ``prompt [EOS]`` (with an attention mask, since its attention is
bidirectional); the decoder is trained on ``target [EOS]``.

Over-long examples: the target is never cut (an over-long target is an error). A prompt may name
the part of it that can be cut, ``Examples.cut_spans`` (the document of a summarisation prompt:
instruction and "Summary :" cue around it must survive); such a prompt keeps the longest run of
the span's first words that fits (:func:`fit_prompt`). A prompt without a span loses its end.
Prompts that fit are encoded exactly as they are, span or not.

EOS in the loss. Training keeps the closing EOS as a target token (the model must learn to stop).
Attribution does not: FTRACE's code drops EOS from the target before taking query and training
gradients, and on a query whose answer the model has not learned yet the EOS loss (10-12 nats on
our tiny models) would dominate its gradient. ``target_eos=False`` (``task.without_eos()``) keeps
the encoding unchanged and leaves EOS out of the loss mask only, so every other position's loss is
the same number and the loss is the mean over the answer tokens.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

IGNORE = -100


Span = tuple[int, int]


@dataclass
class Examples:
    """Parallel lists of prompts and targets (a training text is a target with an empty prompt).

    ``cut_spans`` (optional): for each prompt, the character span ``(start, end)`` that may be cut
    when the example does not fit the task's ``max_length`` (e.g. the document inside a
    summarisation prompt), or None for "cut the prompt's end". See the module docstring.
    """

    prompts: list[str]
    targets: list[str]
    cut_spans: list[Span | None] | None = None

    def __post_init__(self) -> None:
        if len(self.prompts) != len(self.targets):
            raise ValueError(f"{len(self.prompts)} prompts but {len(self.targets)} targets")
        if self.cut_spans is not None:
            if len(self.cut_spans) != len(self.prompts):
                raise ValueError(f"{len(self.cut_spans)} cut spans for {len(self.prompts)} prompts")
            for i, (prompt, span) in enumerate(zip(self.prompts, self.cut_spans)):
                if span is not None and not 0 <= span[0] <= span[1] <= len(prompt):
                    raise ValueError(f"cut span {tuple(span)} of prompt {i} is outside its {len(prompt)} "
                                     f"characters: {prompt[:60]!r}")

    def __len__(self) -> int:
        return len(self.targets)

    def span(self, i: int) -> Span | None:
        """The cut span of prompt ``i`` (None: none given)."""
        return None if self.cut_spans is None or self.cut_spans[i] is None else tuple(self.cut_spans[i])

    def subset(self, idx: Sequence[int]) -> "Examples":
        spans = None if self.cut_spans is None else [self.cut_spans[i] for i in idx]
        return Examples([self.prompts[i] for i in idx], [self.targets[i] for i in idx], spans)

    @classmethod
    def texts(cls, texts: Sequence[str]) -> "Examples":
        """Plain language-modelling texts: the loss covers every token."""
        return cls([""] * len(texts), list(texts))


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"] if text else []


def fit_prompt(ids: Callable[[str], list[int]], prompt: str, span: Span, budget: int) -> str:
    """``prompt`` with the text of ``span`` cut after its first ``n`` words (whitespace-separated),
    ``n`` the largest for which the prompt takes at most ``budget`` tokens (``ids`` counts them).

    Everything outside the span survives, so do the span's leading words; a prompt that fits comes
    back unchanged. Raises ``ValueError`` when even the span's removal does not make it fit.
    """
    if len(ids(prompt)) <= budget:
        return prompt
    start, end = span
    head, body, tail = prompt[:start], prompt[start:end], prompt[end:]
    word_ends = [m.end() for m in re.finditer(r"\S+", body)]

    def keep(n: int) -> str:
        return head + (body[: word_ends[n - 1]] if n else "") + tail

    if len(ids(keep(0))) > budget:
        raise ValueError(f"the prompt does not fit {budget} tokens even without its cuttable span "
                         f"({len(ids(keep(0)))} tokens outside it): {prompt[:60]!r}...{prompt[-40:]!r}")
    lo, hi = 0, len(word_ends)  # keep(lo) fits; keep(hi) does not (the whole prompt did not)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if len(ids(keep(mid))) <= budget:
            lo = mid
        else:
            hi = mid
    return keep(lo)


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
        self._fitted: dict[tuple, list[int]] = {}

    def prompt_ids(self, prompt: str, span: Span | None, budget: int) -> list[int]:
        """Token ids of a prompt in at most ``budget`` tokens: its span cut to fit
        (:func:`fit_prompt`), or, without a span, its end cut. A prompt that fits is encoded as is."""
        ids = self.ids(prompt)
        if len(ids) <= budget:
            return ids
        if span is None:
            return ids[: max(budget, 0)]
        key = (prompt, tuple(span), budget)
        if key not in self._fitted:  # training encodes the same examples every epoch
            if len(self._fitted) >= self.ids.limit:
                self._fitted.clear()
            self._fitted[key] = _ids(self.tokenizer, self.fit(prompt, span, budget))
        return self._fitted[key]

    def fit(self, prompt: str, span: Span, budget: int) -> str:
        """:func:`fit_prompt` with this task's tokenizer (its trial texts are not cached)."""
        return fit_prompt(lambda text: _ids(self.tokenizer, text), prompt, span, budget)

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
        for i, (prompt, target) in enumerate(zip(examples.prompts, examples.targets)):
            t = self.ids(target) + [self.tokenizer.eos_token_id]
            if len(t) + len(self.bos) > self.max_length:
                raise ValueError(f"target of {len(t)} tokens does not fit max_length={self.max_length}: "
                                 f"{target[:60]!r}")
            # An over-long prompt loses its cut span's end, or its own end (the target is kept whole).
            p = self.bos + self.prompt_ids(prompt, examples.span(i), self.max_length - len(t) - len(self.bos))
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
        # With a cut span the prompt is fitted before EOS; without one it loses its end (and EOS), as before.
        enc = [(self.ids(p) + [eos])[: self.max_length] if examples.span(i) is None
               else self.prompt_ids(p, examples.span(i), self.max_length - 1) + [eos]
               for i, p in enumerate(examples.prompts)]
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
