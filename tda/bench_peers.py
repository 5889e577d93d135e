"""Side by side with the ecosystem's attribution libraries (``python -m tda.bench --peers``).

On one tiny GPT-2, one set of training examples and queries, in one run:

- **dattri** (``TracInAttributor``) against our :func:`tda.methods.tracin`: exact per-example loss
  gradients over all parameters, summed over the same checkpoints with weight 1. The definitions
  match: the loss is the same function (mean negative log-likelihood of the target tokens,
  :class:`tda.task.CausalLMTask`), no projection, no normalisation. One dattri quirk: in 0.3.0
  ``projector_kwargs=None`` still projects to 512 dims (the attributor falls back to its default
  projector settings), so the attributor's ``projector_kwargs`` is set to ``None`` after
  construction to get its exact dot products.
- **traker** (``TRAKer``) against our :func:`tda.methods.trak` on the final checkpoint, with the
  model output function = our per-example loss and ``Q = I`` (our TRAK's choice, see its
  docstring). Given the *same* projection (our default, the count sketch, passed to traker as its
  projector) and the same
  ridge, the definitions match: traker divides the gradients by ``sqrt(#parameters)`` and its
  ridge is absolute, so ours is passed as ``lambda / #parameters``; traker also rescales
  ``(X^T X)^-1`` by its mean absolute entry, which scales the scores but not their correlation
  (and is why the comparison uses one checkpoint: over several, that per-model scale would weight
  the checkpoints differently). With traker's *own* projection (on CPU a dense Gaussian
  ``BasicProjector``) the scores differ by projection noise: ``score_corr_own_projection`` is
  reported beside, not held to the 0.99.
- **kronfluence** (optional, see ``pyproject.toml``'s ``peers`` note for how to install it) with
  ``factor_strategy="identity"``: plain gradient dot products over the modules it supports
  (``nn.Linear``; GPT-2's ``Conv1D`` layers are converted to ``nn.Linear`` for it), against our
  exact dot products over the same parameters. The tied embedding / LM-head matrix is left out:
  kronfluence sees only its LM-head use, our gradient both uses.

Each library's examples per second is measured on its own full call (features or gradients of
queries and training examples, and the scores), one after the other on the same inputs:
``ratio_vs_ours`` is the peer's rate divided by ours (below 1: the peer is slower).
"""

from __future__ import annotations

import copy
import importlib.util
import logging
import re
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F
from transformers.pytorch_utils import Conv1D

from .gradients import AnyProjector, as_projector, gradient_features, select_parameters
from .methods import tracin, trak
from .models import make_model, parameter_count
from .task import IGNORE, CausalLMTask, Examples

PEERS = ("dattri", "traker", "kronfluence")
MODULES = {"dattri": "dattri", "traker": "trak", "kronfluence": "kronfluence"}
INSTALL = ("pip install -c requirements.lock -e '.[peers]' (dattri, traker); kronfluence apart: "
           "pip install --no-deps --target DIR kronfluence==1.0.1, then PYTHONPATH=DIR (see pyproject.toml)")
GOAL_CORR = 0.99
# The blocks' linear layers (GPT-2's Conv1D): the modules kronfluence tracks and their parameters.
BLOCK_LINEAR_MODULES = r"transformer\.h\.\d+\.(attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)"
BLOCK_LINEAR = BLOCK_LINEAR_MODULES + r"\.(weight|bias)"


def available(name: str) -> bool:
    """Whether a peer library can be imported here."""
    return importlib.util.find_spec(MODULES[name]) is not None


def example_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """One example's loss from its logits ``[T, V]`` and labels ``[T]``: exactly
    ``CausalLMTask.per_example_loss`` (mean NLL of the target tokens, next-token shifted)."""
    logits, labels = logits[:-1], labels[1:]
    mask = labels != IGNORE
    loss = F.cross_entropy(logits, labels.clamp(min=0), reduction="none") * mask
    return loss.sum() / mask.sum().clamp(min=1)


def train_checkpoints(model, task: CausalLMTask, train: Examples, steps: int, lr: float = 1e-3) -> list:
    """Copies of ``model`` after ``steps // 2`` and ``steps`` full-batch AdamW steps on ``train``
    (two checkpoints, as TracIn sums over; the benchmark's gradients are those of a model that has
    started to fit its data, not of random weights)."""
    model = copy.deepcopy(model)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    batch = task.encode(train)
    saved = []
    for step in range(1, steps + 1):
        loss = task.per_example_loss(model, batch).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step in (max(steps // 2, 1), steps):
            saved.append(copy.deepcopy(model).eval())
    return saved


def _loader(task: CausalLMTask, examples: Examples, batch_size: int):
    enc = task.encode(examples)
    data = torch.utils.data.TensorDataset(enc["input_ids"], enc["labels"])
    return torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=False)


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def _corr(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(Pearson r over all query-candidate pairs, the smallest per-query r)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    per_query = [float(np.corrcoef(x, y)[0, 1]) for x, y in zip(a, b)]
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1]), min(per_query)


def _entry(ours_scores, theirs_scores, ours_rate, theirs_rate, **extra) -> dict:
    r, r_min = _corr(ours_scores, theirs_scores)
    return {"score_corr": r, "score_corr_min_query": r_min, "examples_per_s": theirs_rate,
            "ours_examples_per_s": ours_rate, "ratio_vs_ours": theirs_rate / ours_rate,
            "goal_met": r >= GOAL_CORR, **extra}


# ---- dattri: TracIn ---------------------------------------------------------------------------
def dattri_tracin(checkpoints: list, task: CausalLMTask, queries: Examples, train: Examples,
                  batch_size: int) -> np.ndarray:
    """dattri's exact TracIn (weights 1, no projection, no normalisation), ``[n_queries, n_train]``."""
    from dattri.algorithm.tracin import TracInAttributor
    from dattri.task import AttributionTask

    model = copy.deepcopy(checkpoints[0])

    def loss_func(params, data):
        input_ids, labels = data
        out = torch.func.functional_call(model, params, args=(), kwargs={"input_ids": input_ids.unsqueeze(0)})
        return example_loss(out.logits[0], labels)

    attribution = AttributionTask(loss_func=loss_func, model=model,
                                  checkpoints=[c.state_dict() for c in checkpoints])
    attributor = TracInAttributor(task=attribution, weight_list=torch.ones(len(checkpoints)),
                                  normalized_grad=False, device="cpu")
    attributor.projector_kwargs = None  # exact dot products (see the module docstring)
    scores = attributor.attribute(_loader(task, train, batch_size), _loader(task, queries, len(queries)))
    return scores.T.numpy()


# ---- traker: TRAK -----------------------------------------------------------------------------
def traker_trak(model, task: CausalLMTask, queries: Examples, train: Examples, projector: AnyProjector | None,
                proj_dim: int, ridge: float, batch_size: int) -> np.ndarray:
    """traker's TRAK scores ``[n_queries, n_train]`` on one model (output function = our loss, Q = I),
    with our projector (``projector``) or traker's own (``None``); ``ridge`` in our units."""
    from trak import TRAKer
    from trak.modelout_functions import AbstractModelOutput
    from trak.projectors import AbstractProjector, ProjectionType

    class LossOutput(AbstractModelOutput):
        def __init__(self):
            super().__init__()

        def get_output(self, model, weights, buffers, input_ids, labels):
            out = torch.func.functional_call(model, (weights, buffers), args=(),
                                             kwargs={"input_ids": input_ids.unsqueeze(0)})
            return example_loss(out.logits[0], labels)

        def get_out_to_loss_grad(self, model, weights, buffers, batch):
            return torch.ones(batch[0].shape[0], 1)

    class OurProjection(AbstractProjector):
        def __init__(self, inner: AnyProjector):
            super().__init__(grad_dim=0, proj_dim=inner.dim, seed=inner.seed, proj_type=ProjectionType.rademacher,
                             device="cpu")
            self.inner = inner

        def project(self, grads, model_id):
            return self.inner.project(grads)

        def free_memory(self):
            pass

    model = copy.deepcopy(model).eval()
    n_params = parameter_count(model)
    with tempfile.TemporaryDirectory(prefix="traker-") as save_dir:
        traker = TRAKer(model=model, task=LossOutput(), train_set_size=len(train), save_dir=save_dir,
                        device="cpu", use_half_precision=False,
                        projector=None if projector is None else OurProjection(projector), proj_dim=proj_dim,
                        lambda_reg=ridge / n_params, logging_level=logging.ERROR)
        state = model.state_dict()
        traker.load_checkpoint(state, model_id=0)
        for ids, labels in _loader(task, train, batch_size):
            traker.featurize(batch=(ids, labels), num_samples=len(ids))
        traker.finalize_features()
        inner = traker.projector
        if not getattr(inner, "proj_matrix_available", True):
            # traker 0.3.2 on CPU: finalize_features frees BasicProjector's matrix and a one-block
            # projector does not regenerate it for the same model id, so scoring would fail.
            inner.generate_sketch_matrix(inner.generator_states[0])
        traker.start_scoring_checkpoint(exp_name="queries", checkpoint=state, model_id=0, num_targets=len(queries))
        for ids, labels in _loader(task, queries, batch_size):
            traker.score(batch=(ids, labels), num_samples=len(ids))
        scores = np.array(traker.finalize_scores(exp_name="queries"))
    return scores.T


# ---- kronfluence: plain dot products over the linear layers ----------------------------------
def linear_copy(model) -> torch.nn.Module:
    """A copy of a GPT-2 with every ``Conv1D`` replaced by the equivalent ``nn.Linear`` (same
    function; Conv1D stores the transposed weight), so that kronfluence can track it."""
    model = copy.deepcopy(model)
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, Conv1D):
                n_in, n_out = child.weight.shape
                linear = torch.nn.Linear(n_in, n_out)
                with torch.no_grad():
                    linear.weight.copy_(child.weight.T)
                    linear.bias.copy_(child.bias)
                setattr(module, child_name, linear)
    return model.eval()


def kronfluence_dots(model, task: CausalLMTask, queries: Examples, train: Examples, batch_size: int) -> np.ndarray:
    """kronfluence's pairwise scores with the identity factors (plain gradient dot products) over the
    blocks' linear layers of ``model`` (converted, see :func:`linear_copy`), ``[n_queries, n_train]``."""
    from kronfluence.analyzer import Analyzer, prepare_model
    from kronfluence.arguments import FactorArguments, ScoreArguments
    from kronfluence.task import Task

    tracked = [n for n, m in linear_copy(model).named_modules()
               if isinstance(m, torch.nn.Linear) and re.fullmatch(BLOCK_LINEAR_MODULES, n)]

    class LossTask(Task):
        def compute_train_loss(self, batch, model, sample=False):
            logits = model(input_ids=batch[0]).logits
            return sum(example_loss(lg, lb) for lg, lb in zip(logits, batch[1]))

        def compute_measurement(self, batch, model):
            return self.compute_train_loss(batch, model)

        def get_influence_tracked_modules(self):
            return tracked

    linear = prepare_model(linear_copy(model), LossTask())
    enc_train, enc_q = task.encode(train), task.encode(queries)
    train_set = torch.utils.data.TensorDataset(enc_train["input_ids"], enc_train["labels"])
    query_set = torch.utils.data.TensorDataset(enc_q["input_ids"], enc_q["labels"])
    with tempfile.TemporaryDirectory(prefix="kronfluence-") as out:
        analyzer = Analyzer(analysis_name="bench", model=linear, task=LossTask(), output_dir=out,
                            disable_tqdm=True, disable_model_save=True, cpu=True)
        factors = FactorArguments(strategy="identity")
        analyzer.fit_all_factors(factors_name="identity", dataset=train_set, factor_args=factors,
                                 per_device_batch_size=batch_size, overwrite_output_dir=True)
        analyzer.compute_pairwise_scores(scores_name="dots", factors_name="identity", query_dataset=query_set,
                                         train_dataset=train_set, per_device_query_batch_size=len(queries),
                                         per_device_train_batch_size=batch_size, score_args=ScoreArguments(),
                                         overwrite_output_dir=True)
        scores = analyzer.load_pairwise_scores("dots")["all_modules"]
    return scores.numpy()


# ---- the run ------------------------------------------------------------------------------------
def measure_peers(tokenizer, train: Examples, queries: Examples, size: str = "tiny", steps: int = 4,
                  proj_dim: int = 256, lam: float = 1e-3, batch_size: int = 32, seed: int = 0,
                  peers=PEERS) -> dict:
    """Our TracIn / TRAK / dot products beside each installed peer's (see the module docstring).

    Returns ``{"peers": {name: {...}}, "peers_missing": {name: reason}, ...}``; a peer that is not
    installed is listed in ``peers_missing`` with the install command, not an error.
    """
    unknown = [p for p in peers if p not in PEERS]
    if unknown:
        raise ValueError(f"unknown peer {unknown[0]!r}; known: {', '.join(PEERS)}")
    task = CausalLMTask(tokenizer)
    checkpoints = train_checkpoints(make_model(size, tokenizer, seed=seed), task, train, steps)
    final = checkpoints[-1]
    n_examples = len(train) + len(queries)
    out: dict = {"peers_model": size, "peers_parameters": parameter_count(final), "peers_train": len(train),
                 "peers_queries": len(queries), "peers_checkpoints": len(checkpoints), "peers_proj_dim": proj_dim,
                 "peers": {}, "peers_missing": {}}
    for name in peers:
        if not available(name):
            out["peers_missing"][name] = f"not installed: {INSTALL}"
    wanted = [p for p in peers if p not in out["peers_missing"]]

    if "dattri" in wanted:
        ours, t_ours = _timed(lambda: tracin(checkpoints, task, queries, train, reduce="sum", batch_size=batch_size))
        theirs, t_theirs = _timed(lambda: dattri_tracin(checkpoints, task, queries, train, batch_size))
        rate = n_examples * len(checkpoints)
        out["peers"]["dattri"] = _entry(ours, theirs, rate / t_ours, rate / t_theirs, method="TracIn, exact, 2 checkpoints")

    if "traker" in wanted:
        projector = as_projector(proj_dim, seed=seed)  # the default projection (the count sketch)
        phi = gradient_features(final, task, train, "all", projection=projector, batch_size=batch_size).astype(np.float64)
        ridge = lam * float(np.trace(phi.T @ phi)) / proj_dim  # our relative ridge, made absolute for both
        ours, t_ours = _timed(lambda: trak([final], task, queries, train, projection=projector, lam=ridge,
                                           relative=False, batch_size=batch_size))
        theirs, t_same = _timed(lambda: traker_trak(final, task, queries, train, projector, proj_dim, ridge,
                                                    batch_size))
        own, t_own = _timed(lambda: traker_trak(final, task, queries, train, None, proj_dim, ridge, batch_size))
        # Its speed as shipped (its own projection); its agreement given our projection.
        out["peers"]["traker"] = _entry(ours, theirs, n_examples / t_ours, n_examples / t_own,
                                        method="TRAK, 1 checkpoint, same projection and ridge",
                                        score_corr_own_projection=_corr(ours, own)[0],
                                        examples_per_s_our_projection=n_examples / t_same)

    if "kronfluence" in wanted:
        group = select_parameters(final, BLOCK_LINEAR)
        ours, t_ours = _timed(lambda: tracin([final], task, queries, train, group=group, reduce="sum",
                                             batch_size=batch_size))
        theirs, t_theirs = _timed(lambda: kronfluence_dots(final, task, queries, train, batch_size))
        out["peers"]["kronfluence"] = _entry(ours, theirs, n_examples / t_ours, n_examples / t_theirs,
                                             method="gradient dot products over the blocks' linear layers")
    return out


def table(result: dict) -> str:
    """The peers' rows of the bench's table."""
    rows = [("peers", f"{result['peers_model']} GPT-2 ({result['peers_parameters']:,} parameters), "
                      f"{result['peers_train']} training examples x {result['peers_queries']} queries")]
    for name, e in result["peers"].items():
        rows.append((name, f"r = {e['score_corr']:.6f} (min per query {e['score_corr_min_query']:.4f}), "
                           f"{e['examples_per_s']:.1f} examples/s vs ours {e['ours_examples_per_s']:.1f} "
                           f"(ratio {e['ratio_vs_ours']:.3f}); {e['method']}"))
        if "score_corr_own_projection" in e:
            rows.append((f"{name}, own projection", f"r = {e['score_corr_own_projection']:.4f} (projection noise)"))
    for name, why in result["peers_missing"].items():
        rows.append((name, why))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


__all__ = ["PEERS", "available", "example_loss", "train_checkpoints", "dattri_tracin", "traker_trak",
           "linear_copy", "kronfluence_dots", "measure_peers", "table"]
