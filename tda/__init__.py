"""tda: training-data attribution for language models, the package behind the book.

Modules, one concern each: ``data`` (worlds and datasets), ``models`` (tokenizer, tiny-model family,
loading real models), ``task`` (example -> loss), ``checkpoints`` (the one checkpoint format),
``train`` (checkpointed training), ``threads`` (training's fixed CPU thread count), ``base`` (the
world and pre-trained base models), ``params`` (``notebooks/params.yml``: profiles, worlds,
pre-training recipes), ``seeds`` (named sub-seeds),
``store`` (artifacts keyed by their parameters), ``gradients`` (per-example gradients, projections,
dot products), ``methods`` (one formula per attribution method), ``metrics``, ``hallucination``,
``experiments.ftrace`` and ``experiments.dda`` (Parts I and II: pipeline, analysis, claims,
figures), ``results`` and ``claims`` (result files and the scoreboard), ``notebooks`` (the book's
runner), ``plots``, ``progress`` (bars and stage timings), ``bench``.
"""

import warnings as _warnings

# Inside a notebook without ipywidgets, tqdm.auto falls back to the text bar and warns about it on
# import; the text bar is what we want (the book's pages are rendered without widgets), so the
# warning would only clutter every executed page.
_warnings.filterwarnings("ignore", message="IProgress not found")

__version__ = "0.1.0"

# Inside a notebook, tables show a missing value as an em dash rather than NaN (tda.tables).
if "IPython" in __import__("sys").modules:
    from .tables import use_book_tables as _use_book_tables

    _use_book_tables()
