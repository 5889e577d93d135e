"""Candidate sets for FTRACE's re-ranking evaluation (``candidate_sets``).

All proponents + BM25 top-k + up to m same-answer examples + r random examples, deduplicated and
returned in a seeded random order so that no method can profit from where the proponents sit.
BM25 fills *each* mask with its own answer (the original code filled only ``<extra_id_0>``); an
abstract has "the same answer" when any of its answers equals the query's (case-insensitive).
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field

from ..methods.bm25_index import BM25Index
from ..progress import progress
from .ftrace_schema import answer_text, answers, filled_text


@dataclass
class Candidates:
    """Per-query candidate sets (abstract row indices) for the re-ranking evaluation.

    ``query_rows[j]`` is the query row whose candidates are ``indices[j]``; queries without any
    proponent are left out only with ``on_missing="skip"`` and counted in ``skipped``.
    """

    query_rows: list[int]
    indices: list[list[int]]
    skipped: int = 0
    skipped_rows: list[int] = field(default_factory=list)
    params: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.query_rows)

    def labels(self, queries) -> list[list[bool]]:
        """For each kept query, whether each candidate is one of its proponents."""
        props = list(queries["proponents"])
        out = []
        for row, cands in zip(self.query_rows, self.indices):
            p = set(props[row])
            out.append([c in p for c in cands])
        return out

    def sizes(self) -> list[int]:
        return [len(c) for c in self.indices]


def check_candidates(candidates: Candidates, queries) -> None:
    """Raise ``ValueError`` if a candidate set lacks a proponent of its query, has none, or repeats one."""
    props = list(queries["proponents"])
    for row, cands in zip(candidates.query_rows, candidates.indices):
        p = set(props[row])
        if not p:
            raise ValueError(f"query row {row} has no proponent: its MRR would be 0 by construction")
        lost = p - set(cands)
        if lost:
            raise ValueError(f"the candidate set of query row {row} lost {len(lost)} of its {len(p)} "
                             f"proponents (e.g. abstract row {min(lost)})")
        if len(set(cands)) != len(cands):
            raise ValueError(f"the candidate set of query row {row} has duplicates")


def bm25_tokens(inputs: str, targets: str) -> list[str]:
    """BM25's view of an example: the mask filled by the gold answer, split on whitespace."""
    return filled_text(inputs, targets).split()


def candidate_sets(queries, abstracts, k: int = 100, m: int = 100, r: int = 100, seed: int = 0,
                   on_missing: str = "error") -> Candidates:
    """Candidate sets as in the paper's re-ranking evaluation.

    Each set is the union of: all proponents; the BM25 top-``k`` over the whole attribution set
    (``rank_bm25.BM25Plus`` defaults, whitespace tokens, query and abstracts with the mask filled by
    the gold answer; scored by the sparse ``BM25Index``, whose scores are rank_bm25's bit for bit,
    taken in ``np.argsort(-scores, kind="stable")`` order: ties by ascending abstract row); up to
    ``m`` abstracts (seeded sample) with the query's answer among their answers (lower-cased);
    ``r`` random abstracts — deduplicated, in a seeded random order.

    A query with no proponent raises ``ValueError`` (``on_missing="error"``, the default) or is
    dropped and counted in ``Candidates.skipped`` (``on_missing="skip"``). A proponent index outside
    the abstracts always raises.
    """
    if on_missing not in ("error", "skip"):
        raise ValueError(f"on_missing must be 'error' or 'skip', got {on_missing!r}")
    for name, v in (("k", k), ("m", m), ("r", r)):
        if int(v) != v or v < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {v}")
    n_abs = len(abstracts)
    props = [list(p) for p in queries["proponents"]]
    uuids = list(queries["uuid"])
    for row, p in enumerate(props):
        bad = [i for i in p if not 0 <= i < n_abs]
        if bad:
            raise ValueError(f"query row {row} ({uuids[row]}) names abstract row {bad[0]}, but there are "
                             f"{n_abs} abstracts: queries and abstracts do not belong together")
    missing = [row for row, p in enumerate(props) if not p]
    if missing and on_missing == "error":
        raise ValueError(f"{len(missing)} of {len(props)} queries have no proponent (first: row {missing[0]}, "
                         f"uuid {uuids[missing[0]]}); their MRR would be 0 by construction. Pass "
                         "on_missing='skip' to drop and count them.")
    keep = [row for row, p in enumerate(props) if p]

    a_in, a_tg = list(abstracts["inputs_pretokenized"]), list(abstracts["targets_pretokenized"])
    q_in, q_tg = list(queries["inputs_pretokenized"]), list(queries["targets_pretokenized"])
    top_bm25: dict[int, list[int]] = {}
    if k > 0 and n_abs:
        index = BM25Index([bm25_tokens(i, t) for i, t in zip(a_in, a_tg)], desc="BM25 index of the abstracts")
        rows, _ = index.top_k([bm25_tokens(q_in[row], q_tg[row]) for row in keep], k, desc="BM25 top-k")
        top_bm25 = {row: top.tolist() for row, top in zip(keep, rows)}
    by_answer: dict[str, list[int]] = defaultdict(list)
    if m > 0:
        for row, (i, t) in enumerate(zip(a_in, a_tg)):
            for ans in dict.fromkeys(x.lower() for x in answers(i, t)):
                by_answer[ans].append(row)

    indices = []
    for row in progress(keep, desc="candidate sets"):
        rng = random.Random(f"{seed}:{row}:{uuids[row]}")
        cands = list(props[row])
        cands += top_bm25.get(row, [])
        if m > 0:
            same = by_answer.get(answer_text(q_in[row], q_tg[row]).lower(), [])
            cands += same if len(same) <= m else rng.sample(same, m)
        if r > 0:
            cands += rng.sample(range(n_abs), min(r, n_abs))
        cands = list(dict.fromkeys(int(c) for c in cands))
        rng.shuffle(cands)
        indices.append(cands)
    result = Candidates(query_rows=keep, indices=indices, skipped=len(missing) if on_missing == "skip" else 0,
                        skipped_rows=missing if on_missing == "skip" else [],
                        params={"k": k, "m": m, "r": r, "seed": seed})
    check_candidates(result, queries)
    return result



__all__ = ["Candidates", "check_candidates", "bm25_tokens", "candidate_sets"]
