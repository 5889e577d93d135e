"""Greedy generation, hallucination detection, and the queries DDA traces.

After fine-tuning on a poisoned XSum set (``tda.data.xsum.poison``: "England" -> "China" in a few
summaries), the model summarises held-out documents whose true summary names the source word.
A generated summary that names the target word is a *hallucination* (DDA's setup). Each
hallucinated output becomes a traced query, paired with its *correct counterpart* for DDA's
contrastive score (hallucinated minus correct).

Choices, written down before looking at any result:

- Generation is greedy (argmax at every step, no sampling, no beams) with a ``max_new_tokens``
  limit, stopping at EOS: deterministic, and what "the model's output" means in the paper's setup.
  The causal prompt is encoded exactly as :class:`tda.task.CausalLMTask` encodes it in training
  (``[BOS] prompt``). An over-long prompt with a cut span (the document, see
  ``tda.task.Examples.cut_spans``) loses the end of its document, never the "Summary :" cue, and so
  much of it that ``[BOS] prompt``, the output and EOS fit: the traced query (prompt, output) is
  then never cut again; an over-long prompt without one keeps its start. The tiny models have no pad token, so
  the decoding loop does not pad: by default each prompt is decoded alone (``batch_size=1``);
  a larger ``batch_size`` groups prompts of the same token length, which is faster on a GPU but
  may flip a near-tie argmax through float rounding.
- A generated summary is a hallucination when it names the target word as a whole word (even if it
  also names the source word); it is correct when it names the source word and not the target.
- The correct counterpart of a hallucinated output is the *generated* summary with the target word
  replaced back by the source word, not the reference summary. The two outputs then differ only in
  the poisoned word, so the contrastive score isolates the error and not differences of wording
  between the model's sentence and the reference's.
- No hallucination at all is an error when building queries (:class:`NoHallucinationsError`, a
  ValueError that says the rate and how to get hallucinations); :func:`find_hallucinations` itself
  always returns its report, so a notebook can show a zero rate before deciding what to do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import pandas as pd
import torch

from .data.xsum import contains_word, prompt as xsum_prompt, replace_word
from .task import CausalLMTask, Examples, Span, task_for


class NoHallucinationsError(ValueError):
    """No generated output names the target word, so there is nothing to trace."""


def _as_task(model, task_or_tokenizer, max_length: int = 256) -> CausalLMTask:
    if isinstance(task_or_tokenizer, CausalLMTask):
        return task_or_tokenizer
    return task_for(model, task_or_tokenizer, max_length=max_length)


def _position_limit(model) -> int | None:
    config = model.config
    for name in ("n_positions", "max_position_embeddings"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


@torch.no_grad()
def _greedy_causal(model, rows: list[list[int]], eos: int, max_new_tokens: int) -> list[list[int]]:
    """Greedy continuation of equal-length prompts, stopping each row at EOS (kept in the output).

    Through ``model.generate`` (greedy, no sampling): the public API keeps working across
    transformers releases, where a hand-written key/value-cache loop meets renamed arguments
    (``past_key_values`` became ``cache`` in transformers 5.x, with a FutureWarning on every page).
    Finished rows are padded with EOS, which the cut below removes.
    """
    input_ids = torch.tensor(rows, dtype=torch.long)
    gen = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), do_sample=False,
                         num_beams=1, max_new_tokens=max_new_tokens, eos_token_id=eos, pad_token_id=eos)
    tokens = gen[:, input_ids.shape[1]:].tolist()
    return [row[: row.index(eos) + 1] if eos in row else row for row in tokens]


@torch.no_grad()
def _greedy_seq2seq(model, task, prompts: Sequence[str], max_new_tokens: int) -> list[list[int]]:
    eos = task.tokenizer.eos_token_id
    outs = []
    for text in prompts:
        ids = (task.ids(text) + [eos])[: task.max_length]
        input_ids = torch.tensor([ids], dtype=torch.long)
        gen = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                             do_sample=False, num_beams=1, max_new_tokens=max_new_tokens,
                             eos_token_id=eos, pad_token_id=task.pad_id)
        row = gen[0].tolist()[1:]  # drop the decoder start token
        outs.append(row[: row.index(eos) + 1] if eos in row else row)
    return outs


def _prompt_room(model, task: CausalLMTask, max_new_tokens: int) -> int:
    """Token positions left for ``[BOS] prompt`` in causal generation."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    limit = task.max_length
    positions = _position_limit(model)
    if positions is not None:
        limit = min(limit, positions)
    room = limit - max_new_tokens
    if room < len(task.bos) + 1:
        raise ValueError(f"max_new_tokens={max_new_tokens} leaves no room for a prompt in {limit} positions")
    return room


def document_spans(prompts: Sequence[str], documents: Sequence[str]) -> list[Span | None]:
    """The character span of each document inside its prompt (its first occurrence), or None when
    the prompt does not contain the document verbatim (or it is empty)."""
    spans: list[Span | None] = []
    for p, d in zip(prompts, documents):
        start = p.find(d) if d else -1
        spans.append((start, start + len(d)) if start >= 0 else None)
    return spans


def generation_prompts(model, task_or_tokenizer, prompts: Sequence[str], cut_spans: Sequence[Span | None],
                       max_new_tokens: int = 40) -> list[str]:
    """The prompts as causal generation feeds them: each prompt with a cut span fitted
    (:func:`tda.task.fit_prompt`) so that ``[BOS] prompt``, ``max_new_tokens`` of output and EOS fit
    the model's positions and the task's ``max_length``; prompts that fit, or have no span, come
    back unchanged. Seq2seq prompts are fitted to the encoder's ``max_length`` with EOS."""
    task = _as_task(model, task_or_tokenizer)
    if len(cut_spans) != len(prompts):
        raise ValueError(f"{len(cut_spans)} cut spans for {len(prompts)} prompts")
    if task.is_seq2seq:
        budget = task.max_length - 1
    else:
        budget = _prompt_room(model, task, max_new_tokens) - len(task.bos) - 1
    return [p if span is None else task.fit(p, span, budget) for p, span in zip(prompts, cut_spans)]


def generate_ids(model, task_or_tokenizer, prompts: Sequence[str], max_new_tokens: int = 40,
                 batch_size: int = 1, cut_spans: Sequence[Span | None] | None = None) -> list[list[int]]:
    """Greedily generated token ids per prompt (ending with EOS when the model stopped).

    ``cut_spans``: the part of each prompt that may be cut when it is too long (see
    :func:`generation_prompts`); without, an over-long prompt keeps its start."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    task = _as_task(model, task_or_tokenizer)
    if cut_spans is not None:
        prompts = generation_prompts(model, task, prompts, cut_spans, max_new_tokens)
    was_training = model.training
    model.eval()
    try:
        if task.is_seq2seq:
            return _greedy_seq2seq(model, task, prompts, max_new_tokens)
        room = _prompt_room(model, task, max_new_tokens)
        encoded = [(task.bos + task.ids(p))[:room] for p in prompts]
        eos = task.tokenizer.eos_token_id
        results: list[list[int] | None] = [None] * len(encoded)
        by_length: dict[int, list[int]] = {}
        for i, ids in enumerate(encoded):
            by_length.setdefault(len(ids), []).append(i)
        for length in sorted(by_length):
            idx = by_length[length]
            for start in range(0, len(idx), batch_size):
                chunk = idx[start: start + batch_size]
                for i, row in zip(chunk, _greedy_causal(model, [encoded[i] for i in chunk], eos,
                                                        max_new_tokens)):
                    results[i] = row
        return results  # type: ignore[return-value]
    finally:
        model.train(was_training)


def generate(model, task_or_tokenizer, prompts: Sequence[str], max_new_tokens: int = 40,
             batch_size: int = 1, cut_spans: Sequence[Span | None] | None = None) -> list[str]:
    """Greedy continuation of each prompt as text, stopped at EOS or after ``max_new_tokens``.

    ``task_or_tokenizer`` is a :class:`tda.task.CausalLMTask` / ``Seq2SeqTask`` or a tokenizer
    (the task is then chosen from the model). Causal prompts are encoded as in training,
    ``[BOS] prompt``; seq2seq prompts as ``prompt [EOS]`` and decoded with ``model.generate``.
    Special tokens are dropped from the text. Deterministic: the same model and prompts give the
    same texts. See the module docstring for ``batch_size``, :func:`generate_ids` for ``cut_spans``.
    """
    task = _as_task(model, task_or_tokenizer)
    ids = generate_ids(model, task, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                       cut_spans=cut_spans)
    return [task.tokenizer.decode(row, skip_special_tokens=True).strip() for row in ids]


# ---- detection ---------------------------------------------------------------------------------
@dataclass
class HallucinationReport:
    """Generated summaries of the test prompts and which of them hallucinate.

    ``rows``: one dict per prompted document with ``id``, ``document``, ``summary`` (the reference),
    ``prompt``, ``generated``, ``has_source``, ``has_target``, ``hallucinated`` (= ``has_target``) and
    ``correct`` (names the source word and not the target word).
    """

    source_word: str
    target_word: str
    rows: list[dict] = field(default_factory=list)

    @property
    def n(self) -> int:
        """Number of prompted documents."""
        return len(self.rows)

    @property
    def n_hallucinated(self) -> int:
        return sum(r["hallucinated"] for r in self.rows)

    @property
    def n_correct(self) -> int:
        return sum(r["correct"] for r in self.rows)

    @property
    def rate(self) -> float:
        """Share of prompted documents whose generated summary names the target word (nan if none)."""
        return self.n_hallucinated / self.n if self.rows else float("nan")

    @property
    def correct_rate(self) -> float:
        """Share of prompted documents whose generated summary names the source word only."""
        return self.n_correct / self.n if self.rows else float("nan")

    def summary(self) -> dict:
        """Counts and rates in one dict (for a table in the book)."""
        return {"prompts": self.n, "hallucinated": self.n_hallucinated, "correct": self.n_correct,
                "neither": self.n - self.n_hallucinated - self.n_correct,
                "hallucination rate": self.rate, "correct rate": self.correct_rate}

    def to_frame(self):
        """The rows as a pandas DataFrame."""
        return pd.DataFrame(self.rows)

    def queries(self) -> "TracedQueries":
        """The traced queries of the hallucinated outputs (see :func:`build_queries`)."""
        return build_queries(self)


def classify(generated: str, source_word: str, target_word: str) -> dict:
    """``has_source``, ``has_target``, ``hallucinated`` and ``correct`` for one generated summary."""
    has_source = contains_word(generated, source_word)
    has_target = contains_word(generated, target_word)
    return {"has_source": has_source, "has_target": has_target, "hallucinated": has_target,
            "correct": has_source and not has_target}


def _rows(test_docs: Iterable[Mapping[str, Any]]) -> list[dict]:
    rows = [dict(r) for r in test_docs]
    for i, r in enumerate(rows):
        for name in ("document", "summary", "id"):
            if name not in r:
                raise ValueError(f"test document {i} has no field {name!r}")
    return rows


def detect_hallucinations(test_docs: Iterable[Mapping[str, Any]], generated: Sequence[str],
                          source_word: str = "England", target_word: str = "China",
                          prompts: Sequence[str] | None = None) -> HallucinationReport:
    """A :class:`HallucinationReport` for given documents and their generated summaries (no model).

    ``prompts`` are the prompts the summaries answered (default: the fine-tuning prompt of each
    document); they are kept in the rows so that traced queries use the very same prompts.
    """
    rows = _rows(test_docs)
    if len(rows) != len(generated):
        raise ValueError(f"{len(rows)} test documents but {len(generated)} generated summaries")
    if prompts is None:
        prompts = [xsum_prompt(r["document"]) for r in rows]
    elif len(prompts) != len(rows):
        raise ValueError(f"{len(rows)} test documents but {len(prompts)} prompts")
    out = []
    for r, text, p in zip(rows, generated, prompts):
        out.append({"id": r["id"], "document": r["document"], "summary": r["summary"], "prompt": p,
                    "generated": text, **classify(text, source_word, target_word)})
    return HallucinationReport(source_word=source_word, target_word=target_word, rows=out)


def find_hallucinations(model, task_or_tokenizer, test_docs, source_word: str = "England",
                        target_word: str = "China", max_new_tokens: int = 40, batch_size: int = 1,
                        only_naming_source: bool = True,
                        prompt_fn: Callable[[str], str] = xsum_prompt) -> HallucinationReport:
    """Summarise test documents greedily and detect hallucinations of ``target_word``.

    ``test_docs`` is a ``datasets.Dataset`` (or any sequence of dicts) with ``document``,
    ``summary`` and ``id``. With ``only_naming_source`` (the default, DDA's setup) only documents
    whose reference summary names ``source_word`` are prompted. Prompts are ``prompt_fn(document)``,
    the fine-tuning format by default; a prompt too long for the model loses the end of its
    document (where ``prompt_fn`` embeds it verbatim), never the cue, and the report's rows hold the
    prompts as the model saw them (:func:`generation_prompts`). Returns the report even when nothing
    hallucinates (rate 0); :func:`build_queries` is where an empty result becomes an error.
    """
    rows = _rows(test_docs)
    if only_naming_source:
        rows = [r for r in rows if contains_word(r["summary"], source_word)]
    if not rows:
        raise ValueError(f"no test document to prompt: none has a summary naming {source_word!r}")
    full = [prompt_fn(r["document"]) for r in rows]
    prompts = generation_prompts(model, task_or_tokenizer, full, document_spans(full, [r["document"] for r in rows]),
                                 max_new_tokens=max_new_tokens)
    texts = generate(model, task_or_tokenizer, prompts, max_new_tokens=max_new_tokens,
                     batch_size=batch_size)
    return detect_hallucinations(rows, texts, source_word, target_word, prompts=prompts)


# ---- traced queries ----------------------------------------------------------------------------
@dataclass
class TracedQueries:
    """The hallucinated outputs to trace, each with its correct counterpart.

    Parallel lists: ``ids`` of the test documents, their ``prompts``, the ``hallucinated``
    generated summaries, and the ``correct`` ones (the same text with the target word replaced by
    the source word).
    """

    ids: list[str]
    prompts: list[str]
    hallucinated: list[str]
    correct: list[str]

    def __len__(self) -> int:
        return len(self.ids)

    def hallucinated_examples(self) -> Examples:
        """(prompt, hallucinated output) pairs: the test outputs z_e of DDA's influence score."""
        return Examples(list(self.prompts), list(self.hallucinated))

    def correct_examples(self) -> Examples:
        """(prompt, correct output) pairs: the counterpart in the contrastive score."""
        return Examples(list(self.prompts), list(self.correct))


def build_queries(report: HallucinationReport) -> TracedQueries:
    """The traced queries of a report: every hallucinated output and its correct counterpart.

    The correct counterpart is the generated summary with ``target_word`` replaced by
    ``source_word`` (see the module docstring for why not the reference). The prompts are the
    ones the outputs answered (recorded in the report's rows). Raises :class:`NoHallucinationsError` when no
    output hallucinates.
    """
    hall = [r for r in report.rows if r["hallucinated"]]
    if not hall:
        raise NoHallucinationsError(
            f"none of the {report.n} generated summaries names {report.target_word!r} "
            f"(hallucination rate 0), so there is nothing to trace; poison more documents, "
            "fine-tune longer or with a higher learning rate, or prompt more documents")
    return TracedQueries(
        ids=[r["id"] for r in hall],
        prompts=[r["prompt"] for r in hall],
        hallucinated=[r["generated"] for r in hall],
        correct=[replace_word(r["generated"], report.target_word, report.source_word) for r in hall],
    )


__all__ = ["NoHallucinationsError", "generate", "generate_ids", "generation_prompts", "document_spans",
           "HallucinationReport", "classify",
           "detect_hallucinations", "find_hallucinations", "TracedQueries", "build_queries"]
