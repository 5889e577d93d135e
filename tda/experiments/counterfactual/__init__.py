"""Part III: counterfactuals. What each method's top-ranked training examples actually do to the
model of a Part I or Part II run: tail-patch, leave-top-k-out retraining, and LDS.

``interface`` (the :class:`~tda.experiments.counterfactual.interface.Case`: everything Part III
needs from a run, and nothing else), ``adapters`` (``from_ftrace_run``, ``from_dda_run``: a Case
from today's runs), ``pipeline`` (settings and the three measurements), ``analysis`` (label
metrics, summaries), ``claims`` (our own claims C1–C4: rules fixed before any result,
``verdict_c1`` … ``verdict_c4``), ``figures``. Import them as
``from tda.experiments.counterfactual import adapters, analysis, claims, figures, pipeline``.
"""
