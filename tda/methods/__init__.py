"""Attribution methods, one formula each. Each takes queries and candidates and returns a score
matrix ``[n_queries, n_candidates]`` (higher = more likely a proponent); nothing else.

- ``bm25``: lexical (lists of strings);
- ``cea`` (contrastive error attribution) and ``pair_influence`` (DDA's README pipeline): a pair of
  models trained on the errors and on their corrections, one ranking per error set or per error
  (``pair_influence`` returns its decomposed cache, ``PairInfluence``; ``.dda(beta)`` the scores);
- ``embed``: hidden-state cosine; ``tracin``, ``tracin_embed``, ``trak``, ``dda``: gradients
  (``tda.task.Examples`` and checkpoint paths or models);
- ``random_scores``, ``random_target``: baselines.

Where an experiment scores many variants of one method, the method's module also holds its
decomposed cache — compute the parts once, combine many ways: ``tracin.TracInParts``
(per checkpoint, correction and parameter unit), ``embed.EmbedParts`` (per layer and pooling),
``dda.InfluenceDots`` (per checkpoint, hallucinated and correct outputs). The functions above are
those parts, then their combination.
"""

from .baselines import random_scores, random_target
from .bm25 import bm25
from .cea import cea
from .dda import InfluenceDots, check_beta, dda, influence_dots
from .dda_pairs import PairInfluence, pair_influence
from .embed import EmbedParts, cosine_matrix, embed, embed_parts, pooled_states
from .tracin import TracInParts, combine_tracin_embed, tracin, tracin_embed, tracin_parts
from .trak import trak, trak_from_dots

__all__ = ["bm25", "embed", "pooled_states", "cosine_matrix", "EmbedParts", "embed_parts", "tracin", "tracin_embed",
           "TracInParts", "tracin_parts", "combine_tracin_embed", "trak", "trak_from_dots", "dda", "check_beta",
           "InfluenceDots", "influence_dots", "cea", "pair_influence", "PairInfluence", "random_scores", "random_target"]
