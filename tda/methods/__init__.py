"""Attribution methods. Each takes queries and candidates and returns a score matrix
``[n_queries, n_candidates]`` (higher = more likely a proponent); nothing else.

- ``bm25``: lexical (lists of strings);
- ``embed``: hidden-state cosine; ``tracin``, ``tracin_embed``, ``trak``, ``dda``: gradients
  (``tda.task.Examples`` and checkpoint paths or models);
- ``random_scores``, ``random_target``: baselines.
"""

from .baselines import random_scores, random_target
from .bm25 import bm25
from .dda import dda
from .embed import cosine_matrix, embed, pooled_states
from .tracin import tracin, tracin_embed
from .trak import trak

__all__ = ["bm25", "embed", "pooled_states", "cosine_matrix", "tracin", "tracin_embed", "trak", "dda",
           "random_scores", "random_target"]
