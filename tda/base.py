"""The shared starting point of every chapter: the world, its tokenizer, and pre-trained base models.

Each lives in the artifact store under a key of its parameters, so any notebook can run alone and
in any order: the first to ask builds, the others reuse. The world scales (``worlds``) and the
pre-training recipes (``pretrain``) are named in ``notebooks/params.yml`` (``tda.params``);
``overrides`` change single settings (and so make new store entries).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Sequence

from transformers import AutoTokenizer

from .checkpoints import list_checkpoints, load_checkpoint, read_state, run_problems
from .data.world import WORLD_FORMAT, World, WorldConfig, build_world
from .models import make_model, size_of, train_tokenizer
from .params import pretrain_recipe, unknown_settings, world_settings
from .store import DamagedEntryError, Store, damaged, read_json
from .task import CausalLMTask, Examples
from .train import BATCH_ORDER, TrainConfig, checkpoints_at, steps_at, train


@dataclass
class Setup:
    """A built world, its tokenizer, and where its artifacts live."""

    preset: str  # the world's name in notebooks/params.yml
    world: World
    tokenizer: object
    store: Store
    world_dir: Path

    @property
    def world_config(self) -> WorldConfig:
        return self.world.config

    def task(self, max_length: int = 256) -> CausalLMTask:
        return CausalLMTask(self.tokenizer, max_length=max_length)


def world_config(preset: str = "default", overrides: dict | None = None) -> WorldConfig:
    """The world named ``preset`` in params.yml (an unknown name is an error listing the known ones),
    with single settings overridden."""
    named = world_settings(preset, "world")
    known = [f.name for f in fields(WorldConfig)]
    unknown_settings(named, known, f"world settings in params.yml (world {preset!r})")
    overrides = dict(overrides or {})
    unknown_settings(overrides, known, "world settings")
    return WorldConfig(**{**named, **overrides})


def world_params(config: WorldConfig) -> dict:
    """Store parameters of everything derived from a world (its generator version included)."""
    return {"world": asdict(config), "format": WORLD_FORMAT}


def world_setup(preset: str = "default", overrides: dict | None = None, store: Store | None = None) -> Setup:
    """Build (or reuse from the store) the world and its word-level tokenizer.

    A stored ``world.json`` or tokenizer that does not load (corrupt at its stored size, which the
    store's cheap check cannot see) is reported in a warning naming the entry, removed and built
    again: both are deterministic functions of the world's settings."""
    config = world_config(preset, overrides)
    store = store or Store()

    def build(work: Path) -> None:
        world = build_world(config)
        world.save(work / "world.json")
        tokenizer = train_tokenizer(world.pretraining_corpus() + world.vocabulary_text())
        tokenizer.save_pretrained(work / "tokenizer")

    params = world_params(config)
    folder = store.get_or_create("world", params, build)
    try:
        world, tokenizer = _load_world(folder)
    except DamagedEntryError as err:  # a file corrupt at its stored size: rebuilt (deterministically)
        store.discard("world", params, err.problem)
        folder = store.get_or_create("world", params, build)
        world, tokenizer = _load_world(folder)
    return Setup(preset=preset, world=world, tokenizer=tokenizer, store=store, world_dir=folder)


def _load_world(folder: Path):
    """(world, tokenizer) of a stored world entry; a file that does not load raises
    DamagedEntryError naming it, its entry and the command that removes the entry."""
    path = folder / "world.json"
    try:
        world = World.from_json(read_json(path))
    except (KeyError, TypeError, ValueError) as err:  # JSON, but not a world
        raise damaged(path, f"not a stored world ({type(err).__name__}: {err})") from err
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder / "tokenizer")
    except Exception as err:  # the tokenizers library raises its own exception types
        raise damaged(folder / "tokenizer", f"the tokenizer does not load ({type(err).__name__}: "
                      f"{str(err)[:200]})") from err
    return world, tokenizer


def pretrain_config(setup: Setup, size: str, overrides: dict | None = None) -> TrainConfig:
    """The pre-training recipe of a size (params.yml's ``pretrain``), with single settings overridden."""
    size_of(size)  # a clear error for an unknown size
    known = [f.name for f in fields(TrainConfig)]
    recipe = pretrain_recipe(size)
    unknown_settings(recipe, known, f"pre-training settings in params.yml (size {size!r})")
    overrides = dict(overrides or {})
    unknown_settings(overrides, known, "pre-training settings")
    return replace(TrainConfig(**recipe), **overrides)


def check_fractions(fractions: Sequence[float], what: str) -> list[float]:
    """Fractions of a training run in (0, 1], ascending and distinct; anything else is an error naming ``what``."""
    out = [float(f) for f in fractions]
    bad = [f for f in out if not 0.0 < f <= 1.0]
    if bad:
        raise ValueError(f"{what}: fractions of a training run must be in (0, 1], got {bad}")
    if out != sorted(set(out)):
        raise ValueError(f"{what}: fractions must be ascending and distinct, got {out}")
    return out


def base_model_dir(setup: Setup, size: str, pretrain: dict | None = None, tie_embeddings: bool = True,
                   early_checkpoints: Sequence[float] = ()) -> Path:
    """Folder of the base model's pre-training checkpoints (``epoch-000`` ... last), built if needed.

    ``tie_embeddings=False``: the output layer has its own matrix (``tda.models.make_model``), as
    mT5's; Part I's models are untied. ``early_checkpoints``: fractions of pre-training after which
    a step checkpoint is also kept (FTRACE's pre-training checkpoints sit 0.5-1.5% into
    pre-training); ``early_base_checkpoints`` lists them. Both are part of the store key.
    """
    config = pretrain_config(setup, size, pretrain)
    early = check_fractions(early_checkpoints, "early_checkpoints")
    params = {**world_params(setup.world_config), "size": size, "train": asdict(config), "batch_order": BATCH_ORDER,
              "tie_embeddings": bool(tie_embeddings), "early_checkpoints": early}

    def build(work: Path) -> None:
        model = make_model(size, setup.tokenizer, seed=config.seed, tie_embeddings=tie_embeddings)
        examples = Examples.texts(setup.world.pretraining_corpus())
        train(model, setup.tokenizer, setup.task(), examples, work, config, desc=f"pre-train {size}",
              save_at_steps=steps_at(early, len(examples), config))

    return setup.store.get_or_create("base", params, build, resumable=True, check=run_problems)


def base_checkpoints(setup: Setup, size: str, pretrain: dict | None = None, **kind) -> list[Path]:
    """Every pre-training epoch checkpoint of a base model, first (random init) to last. ``kind``:
    ``base_model_dir``'s ``tie_embeddings`` / ``early_checkpoints``."""
    return list_checkpoints(base_model_dir(setup, size, pretrain, **kind))


def early_base_checkpoints(setup: Setup, size: str, pretrain: dict | None = None, tie_embeddings: bool = True,
                           early_checkpoints: Sequence[float] = ()) -> list[Path]:
    """The base model's checkpoints at the fractions ``early_checkpoints`` of pre-training, in order."""
    folder = base_model_dir(setup, size, pretrain, tie_embeddings, early_checkpoints)
    return checkpoints_at(folder, early_checkpoints)


def load_base(setup: Setup, size: str, pretrain: dict | None = None, **kind):
    """(model, tokenizer) of the fully pre-trained base model of a size."""
    return load_checkpoint(base_checkpoints(setup, size, pretrain, **kind)[-1])


def pretrain_history(setup: Setup, size: str, pretrain: dict | None = None, **kind) -> list[float]:
    """Mean training loss of each pre-training epoch."""
    return read_state(base_checkpoints(setup, size, pretrain, **kind)[-1])["epoch_losses"]


__all__ = ["Setup", "world_config", "world_params", "world_setup", "pretrain_config", "check_fractions",
           "base_model_dir", "base_checkpoints", "early_base_checkpoints", "load_base", "pretrain_history"]
