"""The book's one settings file, ``notebooks/params.yml``: pre-training recipes, named worlds, profiles.

- ``pretrain``: the base models' pre-training recipe per model size (``tda.train.TrainConfig``
  fields), the same in every world;
- ``worlds``: named scales of the whole book. A world fixes the synthetic world (``world``:
  ``tda.data.world.WorldConfig`` fields), Part I's settings per data set (``ftrace``: ``trex``,
  ``synth``) and Part II's (``dda``). Code holds only the dataclasses' defaults;
- ``profiles``: per profile, ``common`` parameters (handed to every notebook that declares them,
  such as ``world``) and per-notebook parameters (read by ``tda.notebooks``).

Every lookup of a name that the file does not hold — a profile, a world, a section, a model size —
raises :class:`ParamsError` listing the names it does hold; nothing falls back silently.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from .store import REPO_ROOT

PARAMS_FILE = REPO_ROOT / "notebooks" / "params.yml"
TOP_LEVEL = ("pretrain", "worlds", "profiles")
WORLD_SECTIONS = ("world", "ftrace", "dda")


class ParamsError(ValueError):
    """params.yml, or a name or parameter looked up in it, is malformed or unknown."""


def _mapping(value, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ParamsError(f"{where} must be a mapping of names to settings, got {type(value).__name__}")
    return value


def load_params(path: str | Path = PARAMS_FILE) -> dict:
    """Read and check params.yml: ``{"pretrain": {...}, "worlds": {...}, "profiles": {...}}``.

    Checks the structure (mappings where mappings belong, known top-level and world sections) and
    that every profile's ``common.world`` names a world of the file.
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ParamsError(f"{path} does not exist") from None
    except yaml.YAMLError as err:
        raise ParamsError(f"{path} is not valid YAML: {err}") from err
    if not isinstance(data, dict) or not data:
        raise ParamsError(f"{path} must be a mapping with the sections {', '.join(TOP_LEVEL)}")
    unknown = sorted(set(data) - set(TOP_LEVEL))
    missing = [k for k in TOP_LEVEL if k not in data]
    if unknown or missing:
        raise ParamsError(f"{path}: the top-level sections are {', '.join(TOP_LEVEL)}; "
                          + (f"unknown: {unknown}" if unknown else f"missing: {missing}"))
    for size, recipe in _mapping(data["pretrain"], f"{path}: pretrain").items():
        _mapping(recipe, f"{path}: pretrain.{size}")
    worlds = _mapping(data["worlds"], f"{path}: worlds")
    if not worlds:
        raise ParamsError(f"{path}: worlds is empty; name at least one world")
    for world, sections in worlds.items():
        sections = _mapping(sections, f"{path}: world {world!r}")
        bad = sorted(set(sections) - set(WORLD_SECTIONS))
        if bad:
            raise ParamsError(f"{path}: world {world!r} has unknown section(s) {bad}; sections: "
                              f"{', '.join(WORLD_SECTIONS)}")
        for section, values in sections.items():
            _mapping(values, f"{path}: world {world!r}, section {section!r}")
    profiles = _mapping(data["profiles"], f"{path}: profiles")
    if not profiles:
        raise ParamsError(f"{path}: profiles is empty; name at least one profile")
    for profile, sections in profiles.items():
        if not isinstance(sections, dict):
            raise ParamsError(f"{path}: profile {profile!r} must be a mapping of notebook names to "
                              f"settings, got {type(sections).__name__}")
        for section, values in sections.items():
            if values is not None and not isinstance(values, dict):
                raise ParamsError(f"{path}: profile {profile!r}, section {section!r} must be a mapping "
                                  f"of parameter names to values, got {type(values).__name__}")
        world = (sections.get("common") or {}).get("world")
        if world is not None and world not in worlds:
            raise ParamsError(f"{path}: profile {profile!r} uses world {world!r}, which the file does not define; "
                              f"worlds: {', '.join(worlds)}")
    return data


def profile_names(path: str | Path = PARAMS_FILE) -> list[str]:
    return list(load_params(path)["profiles"])


def world_names(path: str | Path = PARAMS_FILE) -> list[str]:
    return list(load_params(path)["worlds"])


def check_world(world: str, path: str | Path = PARAMS_FILE) -> str:
    """``world`` itself if params.yml defines it; else ParamsError listing the worlds it defines."""
    names = world_names(path)
    if world not in names:
        raise ParamsError(f"unknown world {world!r}; known worlds: {', '.join(names)} (section 'worlds' of {path})")
    return world


def world_settings(world: str, section: str, path: str | Path = PARAMS_FILE) -> dict:
    """The settings a world gives one section (``world``, ``ftrace`` or ``dda``); ``{}`` if it lists none."""
    if section not in WORLD_SECTIONS:
        raise ParamsError(f"unknown world section {section!r}; sections: {', '.join(WORLD_SECTIONS)}")
    check_world(world, path)
    return dict(load_params(path)["worlds"][world].get(section) or {})


def pretrain_recipe(size: str, path: str | Path = PARAMS_FILE) -> dict:
    """The pre-training settings of a model size; ParamsError listing the sizes the file has."""
    recipes = load_params(path)["pretrain"]
    if size not in recipes:
        raise ParamsError(f"no pre-training recipe for model size {size!r} in {path} (section 'pretrain'); "
                          f"sizes: {', '.join(recipes)}")
    return dict(recipes[size] or {})


def unknown_settings(given, known, where: str) -> None:
    """Raise ParamsError when ``given`` names settings outside ``known``, naming both."""
    bad = sorted(set(given) - set(known))
    if bad:
        raise ParamsError(f"unknown {where} {bad}; known: {sorted(known)}")


__all__ = ["PARAMS_FILE", "ParamsError", "load_params", "profile_names", "world_names", "check_world",
           "world_settings", "pretrain_recipe", "unknown_settings"]
