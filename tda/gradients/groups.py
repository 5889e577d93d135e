"""Parameter groups: which parameters a gradient is taken with respect to, and the units they split into.

A *group* is:

- ``"all"``: every distinct parameter (tied input/output embeddings counted once);
- ``"embedding"``: the input embedding matrix (``wte`` in GPT-2; with tied weights its gradient
  also carries the output layer's share, as in FTRACE's "embedding layer" runs);
- ``"block.i"``: transformer block ``i`` (for an encoder-decoder, block ``i`` of both stacks;
  ``"encoder.block.i"`` / ``"decoder.block.i"`` pick one stack);
- ``"head"``: the final layer norm of the output stack, plus ``lm_head`` when it is not tied;
- a regular expression (``str`` that is not an alias, or ``re.Pattern``) searched in parameter
  names, or a list of any of these (their union, in the model's order).

*Units* (``parameter_units``) partition a model's parameters into the embedding, each block, the
head and the rest, so that a gradient dot product over any union of units is a sum of per-unit dot
products (TracIn's decomposed cache, ``tda.methods.tracin.TracInParts``).
"""

from __future__ import annotations

import re
from typing import Sequence, Union

import torch

GroupSpec = Union[str, "re.Pattern[str]", Sequence[Union[str, "re.Pattern[str]"]]]

_BLOCK_RE = re.compile(r"^(?:(encoder|decoder)\.)?block\.(\d+)$")
_BLOCK_CONTAINERS = ("h", "layers", "layer", "block", "blocks")
_FINAL_NORMS = ("ln_f", "final_layer_norm", "norm", "final_layernorm", "final_norm")


def parameter_names(model: torch.nn.Module) -> list[str]:
    """Names of the model's distinct parameters, in order (a tied weight appears once)."""
    return [name for name, _ in model.named_parameters()]


def _available(model) -> str:
    return ", ".join(parameter_names(model))


def _block_of(name: str) -> tuple[str, int] | None:
    """(stack prefix, block index) of a parameter inside a numbered transformer block."""
    parts = name.split(".")
    for j in range(len(parts) - 2):
        if parts[j] in _BLOCK_CONTAINERS and parts[j + 1].isdigit():
            return ".".join(parts[:j]), int(parts[j + 1])
    return None


def _embedding_names(model) -> list[str]:
    by_id = {id(p): n for n, p in model.named_parameters()}
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if emb is None or id(emb.weight) not in by_id:
        return []
    return [by_id[id(emb.weight)]]


def _head_names(model) -> list[str]:
    names = parameter_names(model)
    seq2seq = bool(getattr(getattr(model, "config", None), "is_encoder_decoder", False))
    out = []
    for name in names:
        parts = name.split(".")
        if _block_of(name) is None and len(parts) >= 2 and parts[-2] in _FINAL_NORMS:
            if not seq2seq or name.startswith("decoder.") or ".decoder." in name:
                out.append(name)
    by_id = {id(p): n for n, p in model.named_parameters()}
    out_emb = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    # A tied lm_head is the input embedding: it is not listed again (named_parameters drops it).
    if out_emb is not None and id(out_emb.weight) in by_id:
        tied = _embedding_names(model)
        if by_id[id(out_emb.weight)] not in tied:
            out.append(by_id[id(out_emb.weight)])
    return out


def _one_group(model, group) -> list[str]:
    names = parameter_names(model)
    if isinstance(group, re.Pattern):
        return [n for n in names if group.search(n)]
    if not isinstance(group, str):
        raise TypeError(f"a parameter group is a string, a compiled regex or a list of them; got "
                        f"{type(group).__name__}")
    if group == "all":
        return names
    if group in names:  # an exact parameter name is itself, not a regular expression
        return [group]
    if group == "embedding":
        return _embedding_names(model)
    if group == "head":
        return _head_names(model)
    match = _BLOCK_RE.match(group)
    if match:
        stack, index = match.group(1), int(match.group(2))
        out = []
        for n in names:
            found = _block_of(n)
            if found and found[1] == index and (stack is None or found[0].split(".")[-1] == stack):
                out.append(n)
        return out
    try:
        pattern = re.compile(group)
    except re.error as err:
        raise ValueError(f"parameter group {group!r} is neither a known group (all, embedding, head, "
                         f"block.i) nor a valid regular expression: {err}") from err
    return [n for n in names if pattern.search(n)]


def select_parameters(model: torch.nn.Module, group: GroupSpec = "all") -> list[str]:
    """Parameter names of a group (see the module docstring), in the model's order.

    A list is the union of its members. A group (or a member of a list) that matches no
    parameter raises ValueError naming it and listing the model's parameter names.
    """
    members = [group] if isinstance(group, (str, re.Pattern)) else list(group)
    if not members:
        raise ValueError("an empty list of parameter groups selects nothing")
    chosen: set[str] = set()
    for member in members:
        found = _one_group(model, member)
        if not found:
            label = member.pattern if isinstance(member, re.Pattern) else member
            raise ValueError(f"parameter group {label!r} matches no parameter of "
                             f"{type(model).__name__}; its parameters are: {_available(model)}")
        chosen.update(found)
    return [n for n in parameter_names(model) if n in chosen]



def parameter_units(model: torch.nn.Module, group: GroupSpec = "all") -> dict[str, list[str]]:
    """The group's parameters split into units: ``embedding``, ``block.0``.. , ``head``, ``other``.

    Uses ``select_parameters``' groups; whatever no group claims (GPT-2's position embeddings) is
    ``other``. The units partition the group, so a dot product over the group is the sum of the
    units' dot products. Units come in the order of ``unit_order``.
    """
    names = select_parameters(model, group)
    units: dict[str, list[str]] = {}
    taken: set[str] = set()

    def add(unit: str, alias: str) -> bool:
        try:
            found = [n for n in select_parameters(model, alias) if n in names and n not in taken]
        except ValueError:
            return False
        if found:
            units[unit] = found
            taken.update(found)
        return True

    add("embedding", "embedding")
    i = 0
    while add(f"block.{i}", f"block.{i}"):
        i += 1
    add("head", "head")
    rest = [n for n in names if n not in taken]
    if rest:
        units["other"] = rest
    return units


def unit_order(units: Sequence[str]) -> list[str]:
    """Units in the order embedding, block.0, ..., head, other."""
    def key(u):
        if u == "embedding":
            return (0, 0)
        if u.startswith("block."):
            return (1, int(u.split(".")[1]))
        return (2, 0) if u == "head" else (3, 0)
    return sorted(units, key=key)


__all__ = ["GroupSpec", "parameter_names", "select_parameters", "parameter_units", "unit_order"]
