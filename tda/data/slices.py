"""Queries as model examples, whether a model answers them, and the paper's query slices.

"Correct" (query slices) = every answer token is the argmax under teacher forcing (EOS not
required). For the answer tokens this is the same as greedy decoding reproducing the answer: if
each teacher-forced argmax equals the gold token, greedy decoding feeds back exactly the gold
prefix, and conversely.
"""

from __future__ import annotations

from typing import Sequence

from .ftrace_schema import MASK_RE, answer_text, check_relations
from .synth import SYNTH_FORMS, SYNTH_URI_RE, synth_surface
from .world import ANSWER_MARK


def to_examples(ds, seq2seq: bool = False, mask_token: str | None = None):
    """A queries or abstracts dataset as ``tda.task.Examples``.

    Causal (default): prompt ``f"{inputs_pretokenized} answer :"`` and target the plain answer
    (T5 sentinels removed; several answers joined by ``ANSWER_SEP``) — on the small world exactly
    the ``cloze_text`` format of pre-training. ``seq2seq=True``: the raw fields (T5 format).
    ``mask_token`` replaces every mask (``[MASK]`` or ``<extra_id_N>``) in the prompt.
    """
    from ..task import Examples

    inputs, targets = list(ds["inputs_pretokenized"]), list(ds["targets_pretokenized"])
    if seq2seq:
        prompts = inputs
    else:
        prompts = [f"{i} {ANSWER_MARK}" for i in inputs]
        targets = [answer_text(i, t) for i, t in zip(inputs, targets)]
    if mask_token is not None:
        prompts = [MASK_RE.sub(mask_token, p) for p in prompts]
    return Examples(prompts, targets)


def answer_correct(model, task, examples, batch_size: int = 64, include_eos: bool = False) -> list[bool]:
    """Whether each example's target tokens are all the model's argmax under teacher forcing.

    Equivalent to greedy decoding reproducing the target (see the module docstring). EOS is not
    required unless ``include_eos``. An example with no target token counts as wrong.
    """
    import torch

    from ..task import IGNORE

    eos = task.tokenizer.eos_token_id
    out: list[bool] = []
    with torch.no_grad():
        for start in range(0, len(examples), batch_size):
            batch = task.encode(examples.subset(range(start, min(start + batch_size, len(examples)))))
            logits = task.logits(model, batch)
            labels = batch["labels"]
            if not getattr(task, "is_seq2seq", False):
                logits, labels = logits[:, :-1], labels[:, 1:]
            pred = logits.argmax(-1)
            mask = labels != IGNORE
            if not include_eos:
                mask &= labels != eos
            ok = ((pred == labels) | ~mask).all(1) & mask.any(1)
            out.extend(bool(x) for x in ok)
    return out


def query_losses(model, task, queries, batch_size: int = 64) -> list[float]:
    """Each query's mean target-token loss at ``model`` (``tda.task.losses``)."""
    from ..task import losses

    examples = to_examples(queries, seq2seq=getattr(task, "is_seq2seq", False))
    return [float(x) for x in losses(model, task, examples, batch_size=batch_size)]




def acceptable_answers(queries) -> list[list[str]]:
    """Per query, the answers that count as correct: its own target first, then, for a SYNTH query
    (``masked_type`` column, ``E<n>`` URIs), the masked entity's other three writings.

    A SYNTH query is a held-out utterance: the training set holds the other three writings of
    its answer in exactly its context (same template, same writing of the other entity) and never
    the held-out one, so a model that learned the fact answers in a writing it was shown; demanding
    the held-out writing would count almost every learned SYNTH fact as not learned.
    """
    targets = [answer_text(i, t) for i, t in zip(queries["inputs_pretokenized"], queries["targets_pretokenized"])]
    if "masked_type" not in queries.column_names:
        return [[t] for t in targets]
    out = []
    for target, obj, sub, masked in zip(targets, queries["obj_uri"], queries["sub_uri"], queries["masked_type"]):
        uri = obj if masked == "object" else sub
        if not SYNTH_URI_RE.fullmatch(uri):
            out.append([target])
            continue
        n = int(uri[1:])
        out.append([target] + [w for w in (synth_surface(n, f) for f in range(len(SYNTH_FORMS))) if w != target])
    return out


def queries_correct(model, task, queries, batch_size: int = 64) -> list[bool]:
    """Whether the model answers each query with one of its ``acceptable_answers`` (teacher-forced
    argmax of every answer token, i.e. greedy decoding writes that answer)."""
    from ..task import Examples

    seq2seq = getattr(task, "is_seq2seq", False)
    examples = to_examples(queries, seq2seq=seq2seq)
    ok = answer_correct(model, task, examples, batch_size)
    if seq2seq:
        return ok
    options = acceptable_answers(queries)
    for k in range(1, max(len(o) for o in options) if options else 1):
        rows = [i for i, o in enumerate(options) if len(o) > k and not ok[i]]
        if rows:
            alt = Examples([examples.prompts[i] for i in rows], [options[i][k] for i in rows])
            for i, good in zip(rows, answer_correct(model, task, alt, batch_size)):
                ok[i] = ok[i] or good
    return ok


def synth_entity_ranks(model, task, queries, entities: Sequence[str] | None = None, batch_size: int = 512) -> list[int]:
    """The rank (0 = first) of each SYNTH query's answer entity among ``entities`` (default: every
    entity the queries name), entities ordered by the likelihood of their best-scored writing.

    The paper's SYNTH facts are learned when the model has bound the two entities, whatever it
    writes; a tiny model often picks the right entity and then mixes its writings ("XXII -
    XXVIII"), which exact or any-writing greedy checks count as wrong. This is the closed-vocabulary
    check LAMA uses (rank the candidates), with EOS left out of the likelihood. Ties rank the
    answer after the entities it ties with (pessimistic).
    """
    import numpy as np

    from ..task import Examples, losses

    if "masked_type" not in queries.column_names:
        raise ValueError("synth_top_entity needs SYNTH queries (a 'masked_type' column and E<n> URIs)")
    answers_ = [o if m == "object" else s for o, s, m in zip(queries["obj_uri"], queries["sub_uri"], queries["masked_type"])]
    if entities is None:
        entities = sorted(set(answers_) | set(queries["obj_uri"]) | set(queries["sub_uri"]), key=lambda u: int(u[1:]))
    entities = list(entities)
    for uri in list(entities) + answers_:
        if not SYNTH_URI_RE.fullmatch(uri):
            raise ValueError(f"{uri!r} is not a SYNTH entity URI (E<number>)")
    writings = {u: [synth_surface(int(u[1:]), f) for f in range(len(SYNTH_FORMS))] for u in entities}
    attribution = task.without_eos() if hasattr(task, "without_eos") else task
    prompts = to_examples(queries).prompts
    all_p, all_t = [], []
    for p in prompts:
        for u in entities:
            for w in writings[u]:
                all_p.append(p)
                all_t.append(w)
    # the likelihood of a writing is its summed token log-probability: mean loss x token count
    n_tok = np.asarray([len(task.ids(t)) for t in all_t], dtype=float)
    nll = losses(model, attribution, Examples(all_p, all_t), batch_size=batch_size).numpy() * n_tok
    nll = nll.reshape(len(prompts), len(entities), len(SYNTH_FORMS)).min(2)
    column = {u: i for i, u in enumerate(entities)}
    ranks = []
    for row, a in enumerate(answers_):
        if a not in column:
            ranks.append(len(entities))
        else:
            ranks.append(int((nll[row] <= nll[row, column[a]]).sum()) - 1)
    return ranks


def synth_top_entity(model, task, queries, entities: Sequence[str] | None = None, batch_size: int = 512) -> list[bool]:
    """Whether the model ranks each SYNTH query's answer entity first (``synth_entity_ranks`` == 0)."""
    return [r == 0 for r in synth_entity_ranks(model, task, queries, entities, batch_size)]


def is_synth(queries) -> bool:
    """Whether a queries dataset is SYNTH's (a ``masked_type`` column and ``E<n>`` answer URIs)."""
    return "masked_type" in queries.column_names and all(
        SYNTH_URI_RE.fullmatch(u) for u in list(queries["obj_uri"][:1]) + list(queries["sub_uri"][:1]))


def answer_checks(model, task, queries, beams: int = 3, batch_size: int = 64) -> dict[str, list[bool]]:
    """Per query: ``top1`` (the model's first answer is right) and ``in_top`` (the answer is among its
    first ``beams``), the two checks of FTRACE's learned slice.

    TREx (and the real data): beam search of width ``beams`` (``tda.decode.answer_in_beams``), the
    answer written exactly and followed by EOS, as the paper's decoding. SYNTH: the answer entity's
    rank among all entities (``synth_entity_ranks``), ``top1`` rank 0, ``in_top`` rank < ``beams``.
    """
    from ..decode import answer_in_beams

    if not len(queries):
        return {"top1": [], "in_top": []}
    if is_synth(queries):
        ranks = synth_entity_ranks(model, task, queries)
        return {"top1": [r == 0 for r in ranks], "in_top": [r < beams for r in ranks]}
    examples = to_examples(queries, seq2seq=getattr(task, "is_seq2seq", False))
    top1, in_top = answer_in_beams(model, task, examples.prompts, examples.targets, beams, batch_size)
    return {"top1": top1, "in_top": in_top}


def paper_slices(queries, model_before, checkpoints: Sequence, task, beams: int = 3, batch_size: int = 64) -> dict:
    """FTRACE's query slices over a fine-tuning run, one value per query row (see ``answer_checks``).

    ``model_before``: the model before fine-tuning; ``checkpoints``: the fine-tuning checkpoints
    TracIn uses (models or paths), first to last. Returns ``correct_before`` (top answer right
    before fine-tuning: the *known* slice), ``correct_at`` (per checkpoint, per query),
    ``correct_after`` (at the last), ``top_first`` (the answer among the ``beams`` first answers at
    the first checkpoint), ``learned`` (the paper's code: right at the last checkpoint and not among
    the top ``beams`` at the first), and ``loss_before`` / ``loss_at`` (per checkpoint) /
    ``loss_after`` (mean answer-token loss, EOS excluded as in attribution).
    """
    from ..checkpoints import load_checkpoint_model

    if not checkpoints:
        raise ValueError("paper_slices needs at least one fine-tuning checkpoint")
    models = [load_checkpoint_model(c) for c in checkpoints]
    before = answer_checks(model_before, task, queries, beams, batch_size)
    at = [answer_checks(m, task, queries, beams, batch_size) for m in models]
    after = at[-1]["top1"]
    scoring = task.without_eos() if hasattr(task, "without_eos") else task
    loss_at = [query_losses(m, scoring, queries, batch_size) for m in models]
    return {
        "correct_before": before["top1"], "correct_at": [a["top1"] for a in at], "correct_after": after,
        "top_first": at[0]["in_top"], "known": list(before["top1"]),
        "learned": [a and not t for a, t in zip(after, at[0]["in_top"])],
        "loss_before": query_losses(model_before, scoring, queries, batch_size), "loss_at": loss_at,
        "loss_after": loss_at[-1],
    }


def query_slices(queries, model_before, model_after, task, batch_size: int = 64) -> dict[str, list]:
    """The paper's query slices, one value per query row.

    "Correct" is ``queries_correct``: the query's answer, or for SYNTH any writing of its entity.
    Returns ``correct_before``, ``correct_after``, ``known`` (= correct before fine-tuning: the
    model already predicts the answer), ``learned`` (correct after and not before: the paper's
    "fine-tune-learned" slice), ``loss_before``, ``loss_after``. Note that the slice ``known`` is
    measured on the model; the TREx analogue's ``known`` *column* says whether the fact was in the
    pre-training corpus. To keep both, add these under other names (``ds.add_column``).
    """
    before = queries_correct(model_before, task, queries, batch_size)
    after = queries_correct(model_after, task, queries, batch_size)
    return {
        "correct_before": before, "correct_after": after, "known": list(before),
        "learned": [a and not b for a, b in zip(after, before)],
        "loss_before": query_losses(model_before, task, queries, batch_size),
        "loss_after": query_losses(model_after, task, queries, batch_size),
    }


def filter_queries(queries, relations: Sequence[str] | None = None, rows: Sequence[bool] | None = None):
    """Queries of some relations and/or where ``rows`` (a per-row mask, e.g. a slice) is true.

    Unknown relation ids (not among the dataset's ``predicate_id``s) raise ``ValueError``.
    ``proponents`` stay valid: they index the abstracts, which are not touched.
    """
    keep = list(range(len(queries)))
    if relations is not None:
        wanted = set(check_relations(relations, known=sorted(set(queries["predicate_id"]))))
        preds = list(queries["predicate_id"])
        keep = [i for i in keep if preds[i] in wanted]
    if rows is not None:
        rows = list(rows)
        if len(rows) != len(queries):
            raise ValueError(f"rows has {len(rows)} values for {len(queries)} queries")
        keep = [i for i in keep if rows[i]]
    return queries.select(keep)


__all__ = ["to_examples", "answer_correct", "query_losses", "acceptable_answers", "queries_correct",
           "synth_entity_ranks", "synth_top_entity", "is_synth", "answer_checks", "paper_slices", "query_slices",
           "filter_queries"]
