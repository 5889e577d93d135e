"""Part II: DDA (Wu et al. 2024) on the small world, from poisoning to per-query AUC.

``settings`` (``DDASettings``: full or LoRA fine-tuning), ``pipeline`` (poisoned runs, stored influence
dots, TRAK, BM25), ``analysis`` (per-query AUC and recall@k, summaries over seeds, the ablation, β and
checkpoint sweeps, diagnostics, full against LoRA fine-tuning),
``claims`` (B1–B4: the paper's figures, rules, ``verdict_b1`` … ``verdict_b4``, explanations),
``figures``. A notebook imports them as ``from tda.experiments.dda import analysis, claims, figures,
pipeline`` (they are not imported here, so that the pipeline loads without matplotlib).
"""
