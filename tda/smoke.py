"""The smallest real case, end to end: a user's first command on a new (GPU) machine.

``python -m tda.smoke`` (run by ``scripts/gpu_smoke.sh`` and ``make gpu-smoke``) runs both papers'
pipelines on real-format data with a Hugging Face-format model, in minutes, and prints what ran
where and how long it took, as JSON:

- Part I (FTRACE): FTRACE-format files -> model -> fine-tuning on the abstracts -> BM25 over all
  abstracts, TracIn and EMBED (``tda.methods``), and projected gradient features written by the
  sharded engine (``tda.gradients.shard``, over ``--nproc`` ranks) and ranked by the blocked
  top-k (``tda.gradients.blocked``, checked against the dense product) -> MRR of the proponents.
- Part II (DDA): an XSum-format file -> held-out test documents -> "England" -> "China" in a
  share of the training summaries (``tda.data.xsum.poison``) -> fine-tuning -> greedy summaries
  of the test documents -> how many hallucinate "China".

Sources: ``--ftrace``/``--xsum`` take local files or hub names (``tda.data.sources``);
``--model`` a local folder or hub name with its own tokenizer, or a tiny size (``tiny``) whose
tokenizer is trained on each data set (``tda.model_sources``). Without them the command writes the
sample files of ``tda.data.samples`` and a tiny GPT-2 in Hugging Face format (tokenizer trained on
both samples) under ``--work`` and uses those: it needs no network.

Device: ``--device auto`` trains on the first CUDA device if there is one (``tda.devices``).
Gradient features, TracIn, EMBED and generation run on the CPU (from the checkpoints on disk) until
``tda.gradients`` and ``tda.hallucination`` are device-aware; the JSON says which stage ran where.
The numbers of this case show that everything runs, not how well a method attributes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .checkpoints import list_checkpoints, load_checkpoint
from .data import ftrace as ft
from .data import xsum
from .data.samples import write_ftrace_sample, write_xsum_sample
from .data.sources import DataSource, load_ftrace_source, load_xsum_splits, restrict_ftrace
from .devices import DEVICES, on_device, pick_device
from .gradients.blocked import blocked_topk
from .gradients.features import load_features
from .gradients.shard import save_examples, sharded_features
from .hallucination import find_hallucinations
from .methods.bm25_index import BM25Index
from .methods.embed import embed
from .methods.tracin import tracin
from .metrics import mrr
from .model_sources import ModelSource, save_model, train_text_tokenizer
from .models import make_model
from .seeds import derive_seed
from .task import Examples, task_for
from .train import TrainConfig, train

SOURCE_WORD, TARGET_WORD = "England", "China"


@dataclass
class SmokeSettings:
    """The smallest case's sizes (chosen for a run of minutes on 2 CPU cores; a GPU run is faster)."""

    n_queries: int = 12  # FTRACE queries attributed (sampled with their proponents)
    n_abstracts: int | None = 2000  # abstracts kept, proponents first (None: all; the sample has 240)
    epochs: int = 3
    lr: float = 5e-3  # the tiny family's fine-tuning rate (notebooks/params.yml)
    batch_size: int = 16
    k: int = 10  # BM25 / blocked top-k depth
    projection: int = 64  # dimension of the sharded gradient features
    nproc: int = 1  # ranks of the sharded featurisation (torchrun when > 1)
    n_docs: int | None = 400  # XSum documents read (the first ones)
    test_fraction: float = 0.25
    poison_fraction: float = 0.5  # share of the training summaries naming England that are poisoned
    max_new_tokens: int = 24
    seed: int = 0

    def train_config(self) -> TrainConfig:
        return TrainConfig(epochs=self.epochs, lr=self.lr, batch_size=self.batch_size, warmup_steps=10,
                           schedule="linear", seed=self.seed)


@contextmanager
def _stage(times: dict, name: str):
    start = time.perf_counter()
    yield
    times[name] = round(time.perf_counter() - start, 3)


def sample_inputs(work: Path, seed: int = 0) -> dict[str, Path]:
    """Write the sample FTRACE folder, the sample XSum file and a tiny GPT-2 (Hugging Face format,
    tokenizer trained on both samples and the poisoning word) under ``work``; returns their paths."""
    ftrace_dir = write_ftrace_sample(work / "data" / "ftrace", seed=seed)
    xsum_file = write_xsum_sample(work / "data" / "xsum" / "train.jsonl", seed=seed)
    data = ft.load_ftrace(ftrace_dir)
    news = xsum.load_xsum(xsum_file)
    texts = (_texts(ft.to_examples(data.abstracts)) + _texts(ft.to_examples(data.queries))
             + _texts(xsum.to_examples(news)) + [TARGET_WORD])
    tokenizer = train_text_tokenizer(texts)
    model = make_model("tiny", tokenizer, seed=derive_seed(seed, "smoke-model") % (2**31))
    model_dir = save_model(model, tokenizer, work / "model")
    return {"ftrace": ftrace_dir, "xsum": xsum_file, "model": model_dir}


def _texts(examples: Examples) -> list[str]:
    return [f"{p} {t}".strip() for p, t in zip(examples.prompts, examples.targets)]


def _no_synthetic():
    raise ValueError("the smoke run needs a real source (a local path or hub name), not the synthetic world")


def _finetune(model, tokenizer, examples: Examples, out: Path, s: SmokeSettings, device: torch.device, desc: str):
    if out.exists():
        shutil.rmtree(out)  # a fresh run: the folder may hold another model's checkpoints
    model.to(device)
    state = train(model, tokenizer, on_device(task_for(model, tokenizer), device), examples, out, s.train_config(),
                  desc=desc)
    model.to("cpu")
    return list_checkpoints(out), state["epoch_losses"]


def _sharded(checkpoint: Path, examples: Examples, out: Path, s: SmokeSettings) -> np.ndarray:
    """Projected gradient features of ``examples`` at ``checkpoint``, by the sharded engine."""
    if s.nproc > 1:
        source = save_examples(examples, out.with_suffix(".examples.jsonl"))
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(s.nproc), "-m",
               "tda.gradients.shard", "--model", str(checkpoint), "--examples", str(source),
               "--projection", str(s.projection), "--seed", str(s.seed), "--out", str(out)]
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"sharded featurisation over {s.nproc} ranks failed ({' '.join(cmd)}):\n"
                               f"{done.stderr[-3000:]}")
    else:
        model, tokenizer = load_checkpoint(checkpoint)
        sharded_features(model, task_for(model, tokenizer).without_eos(), examples, out,
                         projection=s.projection, seed=s.seed)
    return load_features(out)


def ftrace_case(source, model_source, work: Path, s: SmokeSettings, device: torch.device) -> dict:
    """Part I's pipeline on a real-format FTRACE source (see the module docstring); a summary dict."""
    times: dict[str, float] = {}
    with _stage(times, "load"):
        data = load_ftrace_source(source, synthetic=_no_synthetic)
        n_queries = min(s.n_queries, sum(1 for p in data.queries["proponents"] if p))
        n_abstracts = s.n_abstracts if s.n_abstracts is not None and s.n_abstracts < len(data.abstracts) else None
        data = restrict_ftrace(data, n_queries, n_abstracts, seed=s.seed)
    queries, abstracts = data
    model_source = ModelSource.parse(model_source)
    with _stage(times, "model"):
        probe = ft.to_examples(abstracts)
        model, tokenizer = model_source.load(texts=_texts(probe) + _texts(ft.to_examples(queries)), seed=s.seed)
        seq2seq = bool(getattr(model.config, "is_encoder_decoder", False))
        train_ex, query_ex = ft.to_examples(abstracts, seq2seq=seq2seq), ft.to_examples(queries, seq2seq=seq2seq)
    with _stage(times, "fine-tune"):
        ckpts, losses = _finetune(model, tokenizer, train_ex, work / "runs" / "ftrace", s, device, "fine-tune (FTRACE)")
    trained, final = ckpts[1:], ckpts[-1]
    task = task_for(model, tokenizer).without_eos()
    proponents = list(queries["proponents"])
    with _stage(times, "bm25"):
        index = BM25Index([ft.bm25_tokens(i, t) for i, t in zip(abstracts["inputs_pretokenized"],
                                                                abstracts["targets_pretokenized"])], desc=None)
        bm25_rows, _ = index.top_k([ft.bm25_tokens(i, t) for i, t in zip(queries["inputs_pretokenized"],
                                                                           queries["targets_pretokenized"])], s.k)
    with _stage(times, "tracin"):
        tracin_scores = tracin(trained, task, query_ex, train_ex, similarity="cosine")
    with _stage(times, "embed"):
        embed_scores = embed(final, task, query_ex, train_ex)
    with _stage(times, "sharded features"):
        feat_dir = work / "runs" / "features"
        feat_dir.mkdir(parents=True, exist_ok=True)
        fq = _sharded(final, query_ex, feat_dir / "queries.f32", s)
        fa = _sharded(final, train_ex, feat_dir / "abstracts.f32", s)
    with _stage(times, "blocked top-k"):
        top = blocked_topk(fq, fa, s.k, query_block=4, candidate_block=64, desc=None)
    dense = fq.astype(np.float64) @ fa.astype(np.float64).T
    dense_top = np.argsort(-dense, axis=1, kind="stable")[:, : top.indices.shape[1]]
    return {
        "source": DataSource.parse(source).describe(), "model": model_source.describe(),
        "n_queries": len(queries), "n_abstracts": len(abstracts), "vocabulary": len(tokenizer),
        "train_losses": [round(x, 4) for x in losses],
        "mrr": {"bm25_top_k": _topk_mrr(bm25_rows, proponents),
                "tracin_cosine": float(mrr(tracin_scores, proponents).mean()),
                "embed": float(mrr(embed_scores, proponents).mean()),
                "projected_features_top_k": _topk_mrr(top.indices, proponents)},
        "blocked_top_k_equals_dense": bool(np.array_equal(top.indices, dense_top)),
        "feature_shape": [list(fq.shape), list(fa.shape)], "seconds": times,
        "devices": {"fine-tune": str(device), "tracin": "cpu", "embed": "cpu", "features": "cpu", "bm25": "cpu"},
    }


def _topk_mrr(rows: np.ndarray, proponents: Sequence[Sequence[int]]) -> float:
    """MRR of the first proponent within each top-k list (0 when none is there)."""
    out = []
    for ranked, props in zip(rows, proponents):
        hits = np.flatnonzero(np.isin(ranked, list(props)))
        out.append(1.0 / (hits[0] + 1) if hits.size else 0.0)
    return float(np.mean(out))


def xsum_case(source, model_source, work: Path, s: SmokeSettings, device: torch.device) -> dict:
    """Part II's pipeline on a real-format XSum source (see the module docstring); a summary dict."""
    times: dict[str, float] = {}
    with _stage(times, "load"):
        spec = DataSource.parse(source)
        if spec.kind != "synthetic" and s.n_docs is not None and spec.limit is None:
            spec = DataSource(spec.kind, spec.location, spec.split, s.n_docs, spec.ids)
        splits = load_xsum_splits(spec, synthetic=_no_synthetic, test_fraction=s.test_fraction, word=SOURCE_WORD,
                                  seed=s.seed)
        train_docs, test_docs = splits["train"], splits["test"]
        poisoned, report = xsum.poison(train_docs, SOURCE_WORD, TARGET_WORD, fraction=s.poison_fraction, seed=s.seed,
                                       return_report=True)
    model_source = ModelSource.parse(model_source)
    with _stage(times, "model"):
        examples = xsum.to_examples(poisoned)
        model, tokenizer = model_source.load(texts=_texts(examples) + _texts(xsum.to_examples(test_docs)), seed=s.seed)
    with _stage(times, "fine-tune"):
        ckpts, losses = _finetune(model, tokenizer, examples, work / "runs" / "xsum", s, device, "fine-tune (XSum)")
    with _stage(times, "generate"):
        final, _ = load_checkpoint(ckpts[-1])
        found = find_hallucinations(final, task_for(final, tokenizer), test_docs, SOURCE_WORD, TARGET_WORD,
                                    max_new_tokens=s.max_new_tokens)
    return {
        "source": spec.describe(), "model": model_source.describe(), "n_train": len(poisoned), "n_test": len(test_docs),
        "n_poisoned": report.n_poisoned, "train_losses": [round(x, 4) for x in losses],
        "prompted": found.n, "hallucinated": found.n_hallucinated, "correct": found.n_correct,
        "example": found.rows[0]["generated"] if found.rows else None, "seconds": times,
        "devices": {"fine-tune": str(device), "generate": "cpu"},
    }


def environment(device: torch.device) -> dict:
    info = {"torch": torch.__version__, "cuda_available": torch.cuda.is_available(), "device": str(device),
            "threads": torch.get_num_threads()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["gpu_peak_memory_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return info


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tda.smoke", description=__doc__.split("\n\n")[0])
    p.add_argument("--work", default=".smoke", help="folder for the sample files, model and runs (default .smoke)")
    p.add_argument("--ftrace", help="FTRACE source: a local folder or hub name (default: the written sample)")
    p.add_argument("--xsum", help="XSum source: a local file/folder or hub name (default: the written sample)")
    p.add_argument("--model", help="a local model folder, a hub name, or a tiny size (default: the written tiny GPT-2)")
    p.add_argument("--device", default="auto", choices=DEVICES, help="where fine-tuning runs (default auto)")
    p.add_argument("--nproc", type=int, default=1, help="ranks of the sharded featurisation (torchrun when > 1)")
    p.add_argument("--epochs", type=int, default=SmokeSettings.epochs)
    p.add_argument("--only", choices=("ftrace", "xsum"), help="run one part only")
    p.add_argument("--out", help="also write the JSON summary to this file")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    start = time.perf_counter()
    device = pick_device(args.device)
    work = Path(args.work)
    settings = SmokeSettings(nproc=args.nproc, epochs=args.epochs)
    samples = sample_inputs(work, settings.seed) if not (args.model and (args.only == "xsum" or args.ftrace)
                                                        and (args.only == "ftrace" or args.xsum)) else {}
    model = args.model or samples["model"]
    summary: dict = {"settings": asdict(settings)}
    if args.only in (None, "ftrace"):
        summary["ftrace"] = ftrace_case(args.ftrace or samples["ftrace"], model, work, settings, device)
    if args.only in (None, "xsum"):
        summary["xsum"] = xsum_case(args.xsum or samples["xsum"], model, work, settings, device)
    summary["environment"] = environment(device)
    summary["seconds"] = round(time.perf_counter() - start, 2)
    text = json.dumps(summary, indent=1, default=str)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
