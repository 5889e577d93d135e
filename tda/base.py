"""The shared starting point of every chapter: the world, its tokenizer, and pre-trained base models.

Each lives in the artifact store under a key of its parameters, so any notebook can run alone and
in any order: the first to ask builds, the others reuse. The world scales (``worlds``) and the
pre-training recipes (``pretrain``) are named in ``notebooks/params.yml`` (``tda.params``);
``overrides`` change single settings (and so make new store entries).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from transformers import AutoTokenizer

from .checkpoints import list_checkpoints, load_checkpoint, read_state, run_problems
from .data.world import WORLD_FORMAT, World, WorldConfig, build_world
from .models import make_model, size_of, train_tokenizer
from .params import pretrain_recipe, unknown_settings, world_settings
from .store import DamagedEntryError, Store, damaged, read_json
from .task import CausalLMTask, Examples
from .train import BATCH_ORDER, TrainConfig, train


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


def base_model_dir(setup: Setup, size: str, pretrain: dict | None = None) -> Path:
    """Folder of the base model's pre-training checkpoints (``epoch-000`` ... last), built if needed."""
    config = pretrain_config(setup, size, pretrain)
    params = {**world_params(setup.world_config), "size": size, "train": asdict(config), "batch_order": BATCH_ORDER}

    def build(work: Path) -> None:
        model = make_model(size, setup.tokenizer, seed=config.seed)
        examples = Examples.texts(setup.world.pretraining_corpus())
        train(model, setup.tokenizer, setup.task(), examples, work, config, desc=f"pre-train {size}")

    return setup.store.get_or_create("base", params, build, resumable=True, check=run_problems)


def base_checkpoints(setup: Setup, size: str, pretrain: dict | None = None) -> list[Path]:
    """Every pre-training checkpoint of a base model, first (random init) to last."""
    return list_checkpoints(base_model_dir(setup, size, pretrain))


def load_base(setup: Setup, size: str, pretrain: dict | None = None):
    """(model, tokenizer) of the fully pre-trained base model of a size."""
    return load_checkpoint(base_checkpoints(setup, size, pretrain)[-1])


def pretrain_history(setup: Setup, size: str, pretrain: dict | None = None) -> list[float]:
    """Mean training loss of each pre-training epoch."""
    return read_state(base_checkpoints(setup, size, pretrain)[-1])["epoch_losses"]


__all__ = ["Setup", "world_config", "world_params", "world_setup", "pretrain_config", "base_model_dir",
           "base_checkpoints", "load_base", "pretrain_history"]
