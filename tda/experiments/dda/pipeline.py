"""Part II's pipeline: DDA (Wu et al. 2024) on the small world, from poisoning to every method's scores.

One *run* is a model size, a seed, and everything the seed decides: the world's draw of tracing documents
(``tda.data.tracing.tracing_news``: genuine China documents and articles naming several countries as
confounders), which England summaries are poisoned (England -> China, a small count), the batch order of the
fine-tuning run, the greedy summaries of the held-out England articles, the hallucinated outputs among them
(the traced queries), the counterfactual check of their labels, and every method's scores over **all**
training documents. The base model (pre-trained once per size, ``tda.base``; a real source's model:
``tda.experiments.sources``) is shared by the seeds. The notebooks choose settings, call :func:`runs`, tabulate.

Each expensive stage is a function ``stage(setup, settings, size, seed, data, ...)`` whose artifact
is in the store as "dda-<subject>", keyed by all its parameters (world included)::

    tracing_news ─> poison ─> finetune_poisoned (checkpoint + AdamW state per epoch; epoch-000 = θ0)
                                 │
                                 ├─> run_losses: base and fine-tuned loss on clean held-out summaries
                                 └─> generations (greedy, final checkpoint) ─> hallucinated queries
                                        │
                                        ├─> label_check: retrain without the poison, count what remains
                                        ├─> stored_influence_dots: <grad l(test output), grad l(train doc)>
                                        │     at θ0..θN (exact; gradient norms kept) -> DDA, TracIn
                                        ├─> train_gram (final checkpoint, exact)   -> TRAK (no projection)
                                        ├─> readme_pairs: ground/error models at θ0..θN -> DDA (README)
                                        ├─> cea_scores: one ground/error pair at θN     -> CEA
                                        └─> BM25 · random

The two reconstructions of DDA (REFERENCES.md, Paper B):

- **minimal pair** (``"DDA"``; ``tda.methods.dda.InfluenceDots``): ``IS_θ = grad l(z_e) . grad l(z_t)``
  for the hallucinated output and for its correct counterpart (the same sentence with England put
  back), ``DDA = C[(1/N) sum_i IS_θi - β IS_θ0]`` with ``C`` hallucinated minus correct; one
  ranking per query.
- **the authors' README pipeline** (``"DDA (README pipeline)"``; ``tda.methods.dda_pairs``): at θ0
  and every epoch checkpoint an error and a ground model are made from the checkpoint (3 AdamW
  steps on all the hallucinated outputs, resp. on their corrections), each training document scores
  ``loss(ground) - loss(error)``, then the same denoise and debias; one ranking per error set.

CEA (Ladhak et al. 2023, ``tda.methods.cea``) is that pair at θN alone. TracIn: ``sum_i η_i IS_θi``;
TRAK: ``D (K + λI)^-1`` at θN from exact dots and Gram matrix (``trak_from_dots``, no projection:
at k = 128 projected TRAK was projection noise, issue 18); both also with DDA's contrast.

Settings: :class:`DDASettings` (``settings``; ``finetune="lora"`` fine-tunes LoRA adapters and takes
every gradient over them; each world's values, with their reasons, in ``notebooks/params.yml``).
The guards (``tda.data.tracing.GUARDS``) and the label check are measured in every run
(:meth:`DDARun.setup_row`); the verdicts leave out flagged runs.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ...base import world_params
from ...checkpoints import list_checkpoints, load_checkpoint, read_state, run_problems
from ...counterfactual import CounterfactualReport, counterfactual_check
from ...data.tracing import genuine_target, guard_failures, lexical_detectors, names_own_country, tracing_news
from ...data.xsum import documents_naming, poison, to_examples
from ...gradients import gradient_dots
from ...hallucination import HallucinationReport, NoHallucinationsError, build_queries, find_hallucinations
from ...methods import bm25, random_scores, tracin, trak_from_dots
from ...lora import apply_lora
from ...methods.cea import cea
from ...methods.dda import InfluenceDots, influence_dots
from ...methods.dda_pairs import PairInfluence, pair_influence
from ...models import parameter_count
from ...progress import Timer
from ...seeds import derive_seed
from ...store import text_digest
from ...task import losses
from ...train import BATCH_ORDER, epoch_learning_rates
from ..sources import is_source, load_base, pretrain_config, source_poisoned, train_on
from .settings import DDASettings

# The methods of the comparison. Set-level methods give one ranking per error set (scores [1, n]);
# the others one per hallucinated output ([queries, n]).
METHODS = ("DDA", "DDA (README pipeline)", "CEA", "TracIn", "TracIn (contrast)", "TRAK", "TRAK (contrast)", "BM25",
           "random")
SET_LEVEL = ("DDA (README pipeline)", "CEA")
# Beyond the paper (not part of any verdict): TracIn with FTRACE's optimizer correction, i.e. every
# gradient divided by sqrt(AdamW's second moment) + 1e-7 at its checkpoint, as FTRACE's code does.
EXTRA_METHODS = ("TracIn+Adam",)
_NEEDS_DOTS = {"DDA", "TracIn", "TracIn (contrast)", "TRAK", "TRAK (contrast)"}
FORMAT = 3  # bump when what a stored artifact of this module holds changes


# ---------------------------------------------------------------------------------------------
# data, fine-tuning, generation, losses, the label check
# ---------------------------------------------------------------------------------------------
@dataclass
class PoisonedData:
    """The train split (as trained: some summaries poisoned), the prompts, the clean test split, what poisoning did."""

    train: object  # datasets.Dataset in the XSum schema, with ``poisoned``
    test: object  # the prompts: held-out articles about the source word, never naming the target word
    clean_test: object  # the whole test split, clean summaries (the base and fine-tuned models' clean loss)
    report: object  # tda.data.xsum.PoisonReport
    target_word: str = "China"

    @property
    def poisoned(self) -> np.ndarray:
        return np.asarray(self.train["poisoned"], dtype=bool)

    @property
    def genuine(self) -> np.ndarray:
        """The hard negatives: clean training documents whose summary names the target word."""
        return genuine_target(self.train, self.target_word)


def poisoned_data(setup, s: DDASettings, seed: int) -> PoisonedData:
    """The seed's tracing news (``tda.data.tracing.tracing_news``), ``n_poison`` of its England summaries poisoned
    (England -> China; only articles that never name China); a real source's: ``sources.source_poisoned``.

    Errors (ValueError, from ``tda.data``): a source or target word that is not a country of the world (naming
    the world's countries); counts that do not fit; more documents to poison than England summaries eligible.
    """
    if is_source(setup):
        return PoisonedData(*source_poisoned(setup, s, seed), target_word=s.target_word)
    news = tracing_news(setup.world, **s.news_settings(), seed=derive_seed(seed, "tracing-news"))
    train_set, report = poison(news["train"], s.source_word, s.target_word, n=s.n_poison,
                               seed=derive_seed(seed, "poison"), return_report=True,
                               unsupported_only=s.unsupported_only)
    test = documents_naming(news["test"], s.source_word)
    if len(test) == 0:
        raise ValueError(f"no test document's summary names {s.source_word!r}: nothing to prompt; raise n_test_source")
    return PoisonedData(train=train_set, test=test, clean_test=news["test"], report=report, target_word=s.target_word)


def run_key(setup, s: DDASettings, size: str, seed: int, data: PoisonedData | None = None) -> dict:
    """Store parameters of a run's fine-tuning: world, base model, data, poisoning and training."""
    data = data if data is not None else poisoned_data(setup, s, seed)
    return {**world_params(setup.world_config), "size": size,
            "pretrain": asdict(pretrain_config(setup, size, s.pretrain)),
            "data": {**s.news_settings(), "n_poison": s.n_poison, "unsupported_only": s.unsupported_only},
            "seed": seed, "train_digest": text_digest(list(data.train["summary"]) + list(data.train["document"])),
            "train": asdict(s.train_config(seed)), "format": FORMAT, "batch_order": BATCH_ORDER, **s.finetune_key()}


def finetune_poisoned(setup, s: DDASettings, size: str, seed: int, data: PoisonedData | None = None) -> Path:
    """The poisoned fine-tuning run (checkpoint + AdamW state per epoch; ``epoch-000`` is the base
    model θ0), from the store if it is there. With ``finetune="lora"`` the base model gets the run's
    adapters first (``tda.lora``: B = 0, so ``epoch-000`` is still θ0) and only they train."""
    data = data if data is not None else poisoned_data(setup, s, seed)

    def build(work: Path) -> None:
        model, tokenizer = load_base(setup, size, s.pretrain)
        if s.lora:
            apply_lora(model, s.lora_config(seed))
        train_on(setup, model, tokenizer, to_examples(data.train), work, s.train_config(seed),
                 desc=f"fine-tune {size} on poisoned news (seed {seed})")

    return setup.store.get_or_create("dda-finetune", run_key(setup, s, size, seed, data), build, resumable=True,
                                     check=run_problems)


def _generation_key(setup, s, size, seed, data) -> dict:
    return {**run_key(setup, s, size, seed, data), "max_new_tokens": s.max_new_tokens, "decoding": "greedy"}


def generations(setup, s: DDASettings, size: str, seed: int, data: PoisonedData | None = None) -> HallucinationReport:
    """The greedy summaries of the prompts by the final checkpoint, classified (a
    ``tda.hallucination.HallucinationReport``), from the store if there."""
    data = data if data is not None else poisoned_data(setup, s, seed)
    run_dir = finetune_poisoned(setup, s, size, seed, data)

    def build(work: Path) -> None:
        model, _ = load_checkpoint(list_checkpoints(run_dir)[-1])
        report = find_hallucinations(model, setup.task(), data.test, s.source_word, s.target_word,
                                     max_new_tokens=s.max_new_tokens)
        (work / "generations.json").write_text(json.dumps(
            {"source_word": report.source_word, "target_word": report.target_word, "rows": report.rows}, indent=1))

    folder = setup.store.get_or_create("dda-generations", _generation_key(setup, s, size, seed, data), build)
    saved = json.loads((folder / "generations.json").read_text())
    return HallucinationReport(source_word=saved["source_word"], target_word=saved["target_word"], rows=saved["rows"])


def run_losses(setup, s: DDASettings, size: str, seed: int, data: PoisonedData, run_dir: Path) -> dict[str, np.ndarray]:
    """Per-example losses at the base model θ0 and the final checkpoint θN, from the store if there:
    ``base_clean`` / ``finetuned_clean`` on the clean held-out summaries of the whole test split
    (the guard: does the base know the task?), ``base_train`` / ``finetuned_train`` on the training
    documents as trained (what fitting did to each kind of document); ``base_copy``: whether the base
    model's greedy summary of each clean held-out article names its own country (the copy guard)."""
    countries = None if is_source(setup) else setup.world.entities["country"]  # a real source has no list

    def build(work: Path) -> None:
        ckpts = list_checkpoints(run_dir)
        out = {}
        for label, ckpt in (("base", ckpts[0]), ("finetuned", ckpts[-1])):
            model, _ = load_checkpoint(ckpt)
            for part, dataset in (("clean", data.clean_test), ("train", data.train)):
                out[f"{label}_{part}"] = losses(model, setup.task(), to_examples(dataset)).detach().double().numpy()
            if label == "base" and countries:
                rows = find_hallucinations(model, setup.task(), data.clean_test, s.source_word, s.target_word,
                                           max_new_tokens=s.max_new_tokens).rows
                out["base_copy"] = names_own_country([r["summary"] for r in rows], [r["generated"] for r in rows],
                                                     countries)
        np.savez(work / "losses.npz", **out)

    folder = setup.store.get_or_create("dda-losses", run_key(setup, s, size, seed, data), build)
    with np.load(folder / "losses.npz") as z:
        return {k: z[k] for k in z.files}


def label_check(setup, s: DDASettings, size: str, seed: int, data: PoisonedData, report: HallucinationReport,
                run_dir: Path) -> CounterfactualReport:
    """``tda.counterfactual.counterfactual_check`` of the run, from the store if there: retrain from
    θ0 without the poisoned documents (same seed, batches and schedule), summarise the same prompts,
    and count which traced hallucinations remain. Raises ``NoHallucinationsError`` for a run
    without hallucinations (there is no label to check)."""
    if report.n_hallucinated == 0:  # before the store: there is no label to check
        raise NoHallucinationsError(f"none of the {report.n} outputs names {report.target_word!r}: the run has no "
                                    "hallucination, so there is no label to check by retraining")
    # keyed by the outputs checked too, so a check is never reused for other outputs of the same run
    key = {**_generation_key(setup, s, size, seed, data), "max_remaining_share": s.max_remaining_share,
           "check": "retrain without the poison",
           "outputs": text_digest([f"{r['id']}\t{r['generated']}" for r in report.rows])}

    def build(work: Path) -> None:
        cf = counterfactual_check(list_checkpoints(run_dir)[0], setup.task(), to_examples(data.train), data.poisoned,
                                  s.train_config(seed), report, max_new_tokens=s.max_new_tokens,
                                  max_remaining_share=s.max_remaining_share)
        (work / "label_check.json").write_text(json.dumps(asdict(cf), indent=1))

    folder = setup.store.get_or_create("dda-label-check", key, build)
    return CounterfactualReport(**json.loads((folder / "label_check.json").read_text()))


# ---------------------------------------------------------------------------------------------
# a run
# ---------------------------------------------------------------------------------------------
@dataclass
class DDARun:
    """One size and seed: data, fine-tuning, hallucinations, the checks, and (if any) every method's scores.

    ``scores[method]``: ``[queries, n_train]`` for per-query methods, ``[1, n_train]`` for the
    set-level ones (:data:`SET_LEVEL`). ``dots`` (minimal-pair parts), ``gram`` (final checkpoint's
    training Gram matrix) and ``pairs`` (README pipeline parts) are the stored parts every variant
    is combined from (``analysis``). ``label_check`` is None when nothing hallucinated.
    """

    size: str
    seed: int
    settings: DDASettings
    data: PoisonedData
    run_dir: Path
    report: HallucinationReport
    queries: object | None  # TracedQueries, None when nothing hallucinated
    losses: dict[str, np.ndarray] = field(default_factory=dict)
    label_check: CounterfactualReport | None = None
    lexical: dict = field(default_factory=dict)
    dots: InfluenceDots | None = None
    gram: np.ndarray | None = None
    pairs: PairInfluence | None = None
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    epoch_losses: list[float] = field(default_factory=list)
    n_parameters: int = 0
    n_trainable: int = 0  # the parameters fine-tuning trained (the adapters' in a LoRA run)

    @property
    def traced(self) -> bool:
        """Whether there is anything to trace (at least one hallucinated output)."""
        return self.queries is not None

    @property
    def flagged(self) -> bool:
        """Whether the label check failed: retraining without the poison left more than
        ``max_remaining_share`` of the hallucinations in place (the labels are false here)."""
        return self.label_check is not None and self.label_check.flagged

    @property
    def usable(self) -> bool:
        """Traced and not flagged: the runs the verdicts use."""
        return self.traced and not self.flagged

    @property
    def poisoned(self) -> np.ndarray:
        return self.data.poisoned

    @property
    def genuine(self) -> np.ndarray:
        return self.data.genuine

    def guard_failures(self) -> list[str]:
        """The guards of ``tda.data.tracing.GUARDS`` this run fails, as sentences (empty: all hold)."""
        row = self.setup_row()
        return guard_failures(row["n_train"], row["n_poisoned"], row["n_genuine_target"], row["base_loss_clean"],
                              row["finetuned_loss_clean"], base_copy_rate=row["base_copy_rate"])

    def setup_row(self) -> dict:
        """The setup as measured in this run (the guards' inputs, hallucinations, the label check)."""
        cf = self.label_check
        return {"size": self.size, "seed": self.seed, "n_train": len(self.data.train),
                "n_poisoned": int(self.poisoned.sum()), "n_genuine_target": int(self.genuine.sum()),
                "base_loss_clean": float(np.mean(self.losses["base_clean"])),
                "finetuned_loss_clean": float(np.mean(self.losses["finetuned_clean"])),
                "base_copy_rate": float(np.nanmean(self.losses["base_copy"])) if "base_copy" in self.losses else None,
                "prompts": self.report.n, "hallucinated": self.report.n_hallucinated,
                "hallucination_rate": self.report.rate,
                "counterfactual_traced": cf.n_traced if cf else 0,
                "counterfactual_remaining": cf.n_remaining if cf else 0,
                "flagged": self.flagged}

    def summary(self) -> dict:
        """One row for a table: counts of data, poisoning, hallucinations and the label check."""
        row = self.setup_row()
        return {"size": self.size, "seed": self.seed, "training documents": row["n_train"],
                "poisoned": row["n_poisoned"], "genuine China documents": row["n_genuine_target"],
                "test prompts": row["prompts"], "hallucinated": row["hallucinated"],
                "hallucination rate": row["hallucination_rate"],
                "remaining without the poison": row["counterfactual_remaining"] if self.traced else np.nan,
                "label check": ("no hallucination" if not self.traced else "flagged" if self.flagged else "holds"),
                "base clean loss": row["base_loss_clean"], "fine-tuned clean loss": row["finetuned_loss_clean"],
                "base names the article's country": row["base_copy_rate"],
                "guards failed": len(self.guard_failures())}


def run(setup, s: DDASettings, size: str, seed: int, timer: Timer | None = None, verbose: bool = True,
        methods: Sequence[str] = METHODS) -> DDARun:
    """Everything of one run, each expensive stage from the store when it is there.

    Always: data, fine-tuning, generations, the losses of the guard, the lexical detectors, and
    (when anything hallucinated) the label check. Then the ``methods`` asked for (default all of
    :data:`METHODS`; a subset skips the stages only they need). When no output hallucinates the
    run is returned with ``queries=None`` and no scores (the notebooks count such runs and say so);
    nothing is raised.
    """
    unknown = sorted(set(methods) - set(METHODS) - set(EXTRA_METHODS))
    if unknown:
        raise ValueError(f"unknown methods {unknown}; known: {list(METHODS + EXTRA_METHODS)}")
    timer = timer or Timer()
    if verbose:
        print(f"{size}, seed {seed}:", flush=True)
    data = poisoned_data(setup, s, seed)
    with timer(f"fine-tune {size}", verbose):
        run_dir = finetune_poisoned(setup, s, size, seed, data)
    ckpts = list_checkpoints(run_dir)
    with timer(f"generate {size}", verbose):
        report = generations(setup, s, size, seed, data)
    with timer(f"clean losses {size}", verbose):
        run_loss = run_losses(setup, s, size, seed, data, run_dir)
    try:
        queries = build_queries(report)
    except NoHallucinationsError:
        queries = None
    model, _ = load_checkpoint(ckpts[-1])
    out = DDARun(size=size, seed=seed, settings=s, data=data, run_dir=run_dir, report=report, queries=queries,
                 losses=run_loss, lexical=lexical_detectors(data.train, s.source_word, s.target_word),
                 epoch_losses=list(read_state(ckpts[-1])["epoch_losses"]), n_parameters=parameter_count(model),
                 n_trainable=sum(p.numel() for p in model.parameters() if p.requires_grad))
    if queries is not None:
        with timer(f"label check {size}", verbose):
            out.label_check = label_check(setup, s, size, seed, data, report, run_dir)
    if verbose:
        cf = out.label_check
        print(f"  {data.report.n_poisoned} of {len(data.train)} training documents poisoned; "
              f"{report.n_hallucinated} of "
              f"{report.n} England test summaries hallucinate ({report.rate:.0%})"
              + (f"; {cf.n_remaining} remain without the poison ({'flagged' if cf.flagged else 'labels hold'})"
                 if cf else ""), flush=True)
        for failure in out.guard_failures():
            print(f"  guard fails: {failure}", flush=True)
    if queries is not None:
        _score(out, setup, s, size, seed, data, queries, ckpts, timer, verbose, methods)
    return out


def _score(out: DDARun, setup, s, size, seed, data, queries, ckpts, timer, verbose, methods) -> None:
    """Every asked-for method's scores of a traced run (``run``'s second half)."""
    if _NEEDS_DOTS & set(methods):
        with timer(f"gradients {size} (DDA, TracIn)", verbose):
            out.dots = stored_influence_dots(setup, s, size, seed, data, queries, ckpts, verbose)
        if "DDA" in methods:
            out.scores["DDA"] = out.dots.dda(beta=s.beta)
        if "TracIn" in methods:
            out.scores["TracIn"] = out.dots.tracin()
        if "TracIn (contrast)" in methods:
            out.scores["TracIn (contrast)"] = out.dots.tracin(contrast=True)
    if {"TRAK", "TRAK (contrast)"} & set(methods):
        with timer(f"TRAK {size} (training Gram matrix)", verbose):
            out.gram = train_gram(setup, s, size, seed, data, ckpts[-1])
        if "TRAK" in methods:
            out.scores["TRAK"] = trak_from_dots(out.dots.checkpoint(out.dots.n_epochs, contrast=False), out.gram,
                                                s.trak_lam)
        if "TRAK (contrast)" in methods:
            out.scores["TRAK (contrast)"] = trak_from_dots(out.dots.checkpoint(out.dots.n_epochs), out.gram, s.trak_lam)
    if "DDA (README pipeline)" in methods:
        with timer(f"README pairs {size}", verbose):
            out.pairs = readme_pairs(setup, s, size, seed, data, queries, ckpts)
        out.scores["DDA (README pipeline)"] = out.pairs.dda(beta=s.beta)
    if "CEA" in methods:
        with timer(f"CEA {size}", verbose):
            out.scores["CEA"] = cea_scores(setup, s, size, seed, data, queries, ckpts[-1])
    if "TracIn+Adam" in methods:
        with timer(f"TracIn+Adam {size}", verbose):
            out.scores["TracIn+Adam"] = corrected_tracin_scores(setup, s, size, seed, data, queries, ckpts)
    if "BM25" in methods:
        with timer("BM25", verbose):
            out.scores["BM25"] = bm25_over_documents(queries, data.train)
    if "random" in methods:
        out.scores["random"] = random_scores(range(len(queries)), range(len(data.train)),
                                             seed=derive_seed(seed, "random"))


def _query_key(setup, s, size, seed, data, queries) -> dict:
    return {**_generation_key(setup, s, size, seed, data),
            "queries": text_digest(list(queries.prompts) + list(queries.hallucinated) + list(queries.correct))}


def stored_influence_dots(setup, s: DDASettings, size: str, seed: int, data: PoisonedData, queries, checkpoints,
                          verbose: bool = True) -> InfluenceDots:
    """The run's ``tda.methods.dda.InfluenceDots`` (θ0 = ``checkpoints[0]``, then every epoch;
    gradient norms kept), from the store if there."""
    key = {**_query_key(setup, s, size, seed, data, queries), "group": s.gradient_group}
    weights = epoch_learning_rates(s.train_config(seed), len(data.train))

    def build(work: Path) -> None:
        d = influence_dots(checkpoints[0], checkpoints[1:], setup.task(), queries.hallucinated_examples(),
                           queries.correct_examples(), to_examples(data.train), group=s.gradient_group,
                           batch_size=s.grad_batch_size, lr_weights=weights, work=work, verbose=verbose)
        d.save(work)
        for p in work.glob("dots-*.npz"):
            p.unlink()

    return InfluenceDots.load(setup.store.get_or_create("dda-dots", key, build, resumable=True))


def train_gram(setup, s: DDASettings, size: str, seed: int, data: PoisonedData, checkpoint) -> np.ndarray:
    """The exact Gram matrix of the training gradients at ``checkpoint`` (TRAK's kernel, no projection), stored."""
    key = {**run_key(setup, s, size, seed, data), "group": s.gradient_group, "checkpoint": Path(checkpoint).name}

    def build(work: Path) -> None:
        model, _ = load_checkpoint(checkpoint)
        examples = to_examples(data.train)
        gram = gradient_dots(model, setup.task(), examples, examples, s.gradient_group, batch_size=s.grad_batch_size).dots
        np.save(work / "gram.npy", (gram + gram.T) / 2)  # symmetric up to float rounding

    return np.load(setup.store.get_or_create("dda-gram", key, build) / "gram.npy")


def readme_pairs(setup, s: DDASettings, size: str, seed: int, data: PoisonedData, queries,
                 checkpoints) -> PairInfluence:
    """The README pipeline's parts (``tda.methods.dda_pairs.pair_influence``, one pair per
    checkpoint θ0..θN for the whole error set, loss form), from the store if there."""
    key = {**_query_key(setup, s, size, seed, data, queries), "contrast": asdict(s.contrast_training()),
           "influence": "loss", "per_query": False}

    def build(work: Path) -> None:
        pair_influence(list(checkpoints), setup.task(), queries.hallucinated_examples(), queries.correct_examples(),
                       to_examples(data.train), training=s.contrast_training(),
                       batch_size=s.grad_batch_size).save(work)

    return PairInfluence.load(setup.store.get_or_create("dda-pairs", key, build))


def cea_scores(setup, s: DDASettings, size: str, seed: int, data: PoisonedData, queries, checkpoint) -> np.ndarray:
    """CEA at the final checkpoint for the whole error set (``tda.methods.cea.cea``), ``[1, n_train]``, stored."""
    key = {**_query_key(setup, s, size, seed, data, queries), "contrast": asdict(s.contrast_training()),
           "per_query": False}

    def build(work: Path) -> None:
        np.save(work / "cea.npy", cea(checkpoint, setup.task(), queries.hallucinated_examples(),
                                      queries.correct_examples(), to_examples(data.train),
                                      training=s.contrast_training(), batch_size=s.grad_batch_size))

    return np.load(setup.store.get_or_create("dda-cea", key, build) / "cea.npy")


def corrected_tracin_scores(setup, s: DDASettings, size: str, seed: int, data: PoisonedData, queries,
                            checkpoints) -> np.ndarray:
    """TracIn over the epoch checkpoints (learning-rate weighted, as ``InfluenceDots.tracin``) with
    FTRACE's optimizer correction (``tda.methods.tracin(correction=True)``), from the store if there.
    One more gradient pass per epoch checkpoint."""
    key = {**_query_key(setup, s, size, seed, data, queries), "group": s.gradient_group, "correction": "adam"}
    weights = epoch_learning_rates(s.train_config(seed), len(data.train))

    def build(work: Path) -> None:
        scores = tracin(list(checkpoints[1:]), setup.task(), queries.hallucinated_examples(), to_examples(data.train),
                        group=s.gradient_group, lr_weights=weights, reduce="sum", correction=True,
                        batch_size=s.grad_batch_size)
        np.save(work / "tracin_adam.npy", scores)

    return np.load(setup.store.get_or_create("dda-tracin-adam", key, build) / "tracin_adam.npy")


def candidate_texts(train) -> list[str]:
    """What BM25 matches against: each training document's article and its (trained) summary."""
    return [f"{d} {s}" for d, s in zip(train["document"], train["summary"])]


def bm25_over_documents(queries, train) -> np.ndarray:
    """BM25Plus (defaults) of each hallucinated summary against every training document's text."""
    return bm25(list(queries.hallucinated), candidate_texts(train))


def runs(setup, s: DDASettings, sizes: Sequence[str], seeds: Sequence[int], timer: Timer | None = None,
         verbose: bool = True, methods: Sequence[str] = METHODS) -> list[DDARun]:
    """:func:`run` for every size and seed."""
    timer = timer or Timer()
    return [run(setup, s, size, seed, timer, verbose, methods) for size in sizes for seed in seeds]


__all__ = ["METHODS", "SET_LEVEL", "EXTRA_METHODS", "FORMAT", "DDASettings", "PoisonedData", "poisoned_data", "run_key",
           "finetune_poisoned", "generations", "run_losses", "label_check", "epoch_learning_rates", "DDARun", "run",
           "runs", "stored_influence_dots", "train_gram", "readme_pairs", "cea_scores", "corrected_tracin_scores",
           "candidate_texts", "bm25_over_documents"]
