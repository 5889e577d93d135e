"""Per-example gradient features over N processes (``torchrun`` / ``torch.distributed``), into ONE feature file.

One process featurises about 5 examples per second per core with the tiny model; FTRACE-TREx has
1,560,453 abstracts. This module splits the rows over the ranks of a ``torch.distributed`` job
(``gloo`` on CPU, ``nccl`` when the ranks compute on CUDA devices), each rank writing its rows
into one shared memmap, so the result is the single-process feature file (raw float32 rows plus
the ``<file>.json`` sidecar of ``tda.gradients.features``), bit for bit:

- The examples are cut into the same length-sorted chunks as ``gradient_features`` cuts them
  (``batch_size`` examples each), and chunk ``i`` goes to rank ``i mod N`` (round robin, so every
  rank gets short and long examples alike). A rank hands its chunks to ``gradient_features`` in
  pieces of whole chunks, which re-sorts them into exactly the same batches: every row is computed
  from the same batch as in one process, hence the same floating-point operations. (Equal
  results also need equal thread settings: ``torchrun`` sets ``OMP_NUM_THREADS=1`` per rank.)
- Rank 0 creates ``<out>.partial`` at full size; every rank writes its rows in place; after a
  barrier at which every rank reports success, rank 0 renames the file and writes the sidecar.
  A failure on any rank leaves no feature file (and no rank waits forever: errors are reported
  through the same collective before they are raised). A complete file with the same shape and
  parameters is reused.

Command line (documented in the README, "Real data and real models")::

    torchrun --nproc_per_node 4 -m tda.gradients.shard --model runs/ft/epoch-010 \\
        --ftrace data/ftrace --part abstracts --projection 2048 --out features/abstracts.f32

Without ``torchrun`` the same command runs as one process. Scoring the features in bounded
memory is ``tda.gradients.blocked``'s concern.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.distributed as dist

from ..checkpoints import second_moments
from ..data.files import jsonl_lines
from ..data.ftrace import load_ftrace, to_examples as ftrace_examples
from ..data.xsum import load_xsum, to_examples as xsum_examples
from ..devices import on_device
from ..models import load_model
from ..task import CausalLMTask, Examples, task_for
from .features import feature_dim, feature_params, gradient_features, load_features
from .groups import GroupSpec, select_parameters
from .per_example import DEFAULT_EPS, _chunks, check_examples
from .projection import DEFAULT_KIND, KINDS, as_projector

PIECE_ROWS = 4096  # rows a rank computes per call of gradient_features (bounds its memory)


@dataclass(frozen=True)
class Ranks:
    """This process's place in the job: ``rank`` of ``world_size``, and the device it computes on."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @classmethod
    def current(cls, device: torch.device | str = "cpu") -> "Ranks":
        """From an initialised process group (else a single process)."""
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size(), torch.device(device))
        return cls(0, 1, torch.device(device))

    def barrier_all_ok(self, ok: bool) -> bool:
        """A barrier that also tells whether every rank got there without an error."""
        if self.world_size == 1:
            return ok
        flag = torch.tensor([0 if ok else 1], dtype=torch.int64, device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.SUM)
        return int(flag.item()) == 0

    def broadcast_object(self, value):
        if self.world_size == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0, device=self.device if self.device.type == "cuda" else None)
        return box[0]


def rank_rows(task: CausalLMTask, examples: Examples, batch_size: int, rank: int, world_size: int) -> list[np.ndarray]:
    """The chunks (arrays of example indices) that ``rank`` computes: chunk ``i`` of the length-sorted
    chunking of ``gradient_features`` goes to rank ``i mod world_size``."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    return _chunks(task, examples, batch_size)[rank::world_size]


def _pieces(chunks: Sequence[np.ndarray], piece_rows: int) -> list[np.ndarray]:
    """Consecutive whole chunks joined into pieces of at most ``piece_rows`` rows (one chunk at least)."""
    pieces, current, size = [], [], 0
    for chunk in chunks:
        if current and size + len(chunk) > piece_rows:
            pieces.append(np.concatenate(current))
            current, size = [], 0
        current.append(chunk)
        size += len(chunk)
    if current:
        pieces.append(np.concatenate(current))
    return pieces


def _write_sidecar(out: Path, shape: tuple[int, int], params: dict) -> None:
    side = out.with_name(out.name + ".json")
    tmp = side.with_name(side.name + ".tmp")
    tmp.write_text(json.dumps({"shape": list(shape), "dtype": "float32", "params": params}, indent=1, default=str))
    os.replace(tmp, side)


def _sidecar_params(model, task, examples, group, out: Path, kw: dict) -> dict:
    """The sidecar parameters ``gradient_features`` writes for these settings (from a one-example run,
    so that they are its own, whatever it records)."""
    probe = out.with_name(out.name + ".probe")
    try:
        gradient_features(model, task, examples.subset([0]), group, out=probe, desc="sidecar probe", **kw)
        return feature_params(probe)["params"]
    finally:
        for path in (probe, probe.with_name(probe.name + ".json")):
            path.unlink(missing_ok=True)


def _complete(out: Path, shape: tuple[int, int], params: dict) -> bool:
    try:
        load_features(out, shape=shape)
        return json.loads(json.dumps(feature_params(out)["params"], default=str)) == \
            json.loads(json.dumps(params, default=str))
    except (FileNotFoundError, ValueError):
        return False


def sharded_features(model: torch.nn.Module, task: CausalLMTask, examples: Examples, out: str | Path,
                     group: GroupSpec = "all", *, projection=None, seed: int = 0, kind: str = DEFAULT_KIND,
                     correction: Mapping[str, torch.Tensor] | None = None, eps: float = DEFAULT_EPS,
                     batch_size: int = 64, method: str = "auto", meta: dict | None = None,
                     ranks: Ranks | None = None, piece_rows: int = PIECE_ROWS) -> Path:
    """``gradient_features(..., out=out)`` computed by every rank of the job together; returns ``out``.

    Every rank calls this with the same arguments (in one process it is a plain call). The file
    and its sidecar equal the single-process ones (see the module docstring). ``piece_rows`` bounds
    the rows a rank holds in memory at once. An error on any rank is raised on that rank, and
    every other rank raises RuntimeError naming the failed ranks' count; no file is left behind.
    """
    check_examples(examples, "examples")
    ranks = ranks or Ranks.current()
    out = Path(out)
    kw = dict(projection=as_projector(projection, seed=seed, kind=kind), correction=correction, eps=eps,
              batch_size=batch_size, method=method, meta=meta)
    names = select_parameters(model, group)
    shape = (len(examples), feature_dim(model, names, kw["projection"]))
    partial = out.with_name(out.name + ".partial")
    error: BaseException | None = None
    params = None
    if ranks.rank == 0:
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            params = _sidecar_params(model, task, examples, group, out, kw)
            if not _complete(out, shape, params):
                np.memmap(partial, mode="w+", dtype=np.float32, shape=shape).flush()
        except BaseException as err:  # reported to every rank below, then raised here
            error = err
    if not ranks.barrier_all_ok(error is None):
        _raise(error, ranks, "preparing the feature file")
    params = ranks.broadcast_object(params)
    if _complete(out, shape, params):
        return out
    try:
        rows = np.memmap(partial, mode="r+", dtype=np.float32, shape=shape)
        chunks = rank_rows(task, examples, batch_size, ranks.rank, ranks.world_size)
        for i, piece in enumerate(_pieces(chunks, piece_rows)):
            desc = f"features rank {ranks.rank}/{ranks.world_size} piece {i + 1}"
            rows[piece] = gradient_features(model, task, examples.subset(piece.tolist()), group, desc=desc, **kw)
        rows.flush()
        del rows
    except BaseException as err:
        error = err
    ok = ranks.barrier_all_ok(error is None)
    if ranks.rank == 0:
        if ok:
            os.replace(partial, out)
            _write_sidecar(out, shape, params)
        else:
            partial.unlink(missing_ok=True)
    if not ranks.barrier_all_ok(True) or not ok:
        _raise(error, ranks, "computing the features")
    return out


def _raise(error: BaseException | None, ranks: Ranks, stage: str):
    if error is not None:
        raise error
    raise RuntimeError(f"rank {ranks.rank}: another rank of the {ranks.world_size} failed while {stage} "
                       "(its error is in its own output); no feature file was written")


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------
def save_examples(examples: Examples, path: str | Path) -> Path:
    """Write examples as JSON lines ``{"prompt", "target"[, "cut_span"]}`` (``--examples`` reads them)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    with tmp.open("w", encoding="utf-8") as fh:
        for i, (prompt, target) in enumerate(zip(examples.prompts, examples.targets)):
            row = {"prompt": prompt, "target": target}
            if examples.span(i) is not None:
                row["cut_span"] = list(examples.span(i))
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return path


def _read_examples_jsonl(path: Path) -> Examples:
    prompts, targets, spans = [], [], []
    for row, line, record in jsonl_lines(path, ValueError):
        span = record.get("cut_span") if isinstance(record, dict) else None
        if not isinstance(record, dict) or not isinstance(record.get("target"), str) \
                or not isinstance(record.get("prompt", ""), str) or not (span is None or (
                    isinstance(span, list) and len(span) == 2 and all(isinstance(v, int) for v in span))):
            raise ValueError(f"{path}: record {row} (line {line}): expected an object with a string 'target', "
                             "optionally a string 'prompt' and a 'cut_span' [start, end]")
        prompts.append(record.get("prompt", ""))
        targets.append(record["target"])
        spans.append(tuple(span) if span is not None else None)
    return Examples(prompts, targets, spans if any(s is not None for s in spans) else None)


def read_examples(args: argparse.Namespace, seq2seq: bool = False) -> Examples:
    """The examples named on the command line: FTRACE files (a part; T5 format for a seq2seq model),
    XSum files, or JSON lines of ``{"prompt": ..., "target": ...}``; the first ``--limit`` of them."""
    if args.ftrace:
        data = load_ftrace(args.ftrace)
        examples = ftrace_examples(getattr(data, args.part), seq2seq=seq2seq)
    elif args.xsum:
        examples = xsum_examples(load_xsum(args.xsum, split=args.split))
    else:
        examples = _read_examples_jsonl(Path(args.examples))
    if args.limit is not None:
        examples = examples.subset(list(range(min(args.limit, len(examples)))))
    return examples


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="torchrun --nproc_per_node N -m tda.gradients.shard",
                                description="Per-example gradient features of a model over many processes, "
                                            "written into one feature file (see tda.gradients.shard).")
    p.add_argument("--model", required=True, help="a saved model folder (a tda checkpoint) or a hub name")
    data = p.add_mutually_exclusive_group(required=True)
    data.add_argument("--ftrace", help="FTRACE files: a folder with queries.* and abstracts.*, or a hub name")
    data.add_argument("--xsum", help="an XSum file or folder, or a hub name")
    data.add_argument("--examples", help='JSON lines of {"prompt": ..., "target": ...} (see save_examples)')
    p.add_argument("--part", choices=("abstracts", "queries"), default="abstracts",
                   help="FTRACE part (default abstracts)")
    p.add_argument("--split", default="train", help="XSum split (default train)")
    p.add_argument("--limit", type=int, help="featurise only the first LIMIT examples")
    p.add_argument("--out", required=True, help="the feature file to write (plus OUT.json)")
    p.add_argument("--group", default="all", help="parameter group (all, embedding, block.i, head, or a regex)")
    p.add_argument("--projection", type=int, default=0, help="random projection dimension (0: full gradients)")
    p.add_argument("--seed", type=int, default=0, help="projection seed")
    p.add_argument("--kind", default=DEFAULT_KIND, choices=KINDS,
                   help=f"projection kind (default {DEFAULT_KIND}; rademacher or gaussian: Kronecker)")
    p.add_argument("--correction", action="store_true", help="divide by AdamW's second moments (from the checkpoint)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--method", default="auto", choices=("auto", "hooks", "vmap", "loop"))
    p.add_argument("--max-length", type=int, default=256, help="token limit of an example")
    p.add_argument("--target-eos", action="store_true",
                   help="keep EOS in the loss (attribution leaves it out: see tda.task)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                   help="where each rank computes (cuda: device LOCAL_RANK, nccl backend; needs tda.gradients' "
                        "CUDA support, see the README)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    device = torch.device("cpu")
    if args.device == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: no CUDA device is visible to this process")
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if world_size > 1:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timedelta(hours=2))
    try:
        ranks = Ranks.current(device)
        model, tokenizer = load_model(args.model)
        model.to(device)
        task = task_for(model, tokenizer, max_length=args.max_length)
        task = on_device(task if args.target_eos else task.without_eos(), device)
        examples = read_examples(args, seq2seq=bool(getattr(model.config, "is_encoder_decoder", False)))
        correction = second_moments(args.model) if args.correction else None
        start = time.perf_counter()
        out = sharded_features(model, task, examples, args.out, args.group, projection=args.projection or None,
                               seed=args.seed, kind=args.kind, correction=correction, batch_size=args.batch_size,
                               method=args.method, ranks=ranks)
        if ranks.rank == 0:
            print(json.dumps({"out": str(out), "rows": len(examples), "ranks": ranks.world_size,
                              "seconds": round(time.perf_counter() - start, 3)}))
    finally:
        if world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
