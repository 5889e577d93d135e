"""Attribution methods. Each takes queries and candidates and returns a score matrix
``[n_queries, n_candidates]`` (higher = more likely a proponent); nothing else.

- ``bm25``: lexical (lists of strings);
- ``cea`` (contrastive error attribution) and ``pair_influence`` (DDA's README pipeline): a pair of
  models trained on the errors and on their corrections, one ranking per error set or per error
  (``pair_influence`` returns its decomposed cache, ``PairInfluence``; ``.dda(beta)`` the scores);
- ``embed``: hidden-state cosine; ``tracin``, ``tracin_embed``, ``trak``, ``dda``: gradients
  (``tda.task.Examples`` and checkpoint paths or models);
- ``random_scores``, ``random_target``: baselines.
"""

from .baselines import random_scores, random_target
from .bm25 import bm25
from .cea import cea
from .dda import dda
from .dda_pairs import pair_influence
from .embed import cosine_matrix, embed, pooled_states
from .tracin import tracin, tracin_embed
from .trak import trak

__all__ = ["bm25", "embed", "pooled_states", "cosine_matrix", "tracin", "tracin_embed", "trak", "dda",
           "cea", "pair_influence", "random_scores", "random_target"]
