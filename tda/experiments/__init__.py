"""The two parts of the book as experiments, each a package split by role:

- ``pipeline``: the settings dataclass, the stored stages of a run, and the runs of a chapter;
- ``analysis``: score sets, long per-query tables (a sweep's parameters as columns), summaries;
- ``claims``: the paper's figures, each claim's rule and its one tested verdict function, and the
  text the chapters glue around them;
- ``figures``: the chapters' plots.

``ftrace`` is Part I (FTRACE, claims A1–A5), ``dda`` Part II (DDA, claims B1–B4), ``counterfactual``
Part III (what retraining says about both; our own claims C1–C4). ``variants`` holds what Parts I
and II share: score sets whose variants are table columns; ``sources`` the setup that points their
pipelines at a real data source and model instead of the synthetic world.
"""
