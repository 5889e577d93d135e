"""Part I: FTRACE (Akyürek et al. 2022) on the small world, from fine-tuning to per-query MRR.

``pipeline`` (settings, runs, stored TracIn and EMBED parts), ``analysis`` (score sets, per-query
MRR / P@10 / R@10, summaries over seeds, paired comparisons), ``claims`` (A1–A5: the paper's
figures, rules, ``verdict_a1`` … ``verdict_a5``), ``figures``. A notebook imports them as
``from tda.experiments.ftrace import analysis, claims, figures, pipeline`` (they are not imported
here, so that the pipeline loads without matplotlib).
"""
