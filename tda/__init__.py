"""tda: training-data attribution for language models, the package behind the book.

Modules, one concern each: ``data`` (worlds and datasets), ``models`` (tokenizer, tiny-model family,
loading real models), ``task`` (example -> loss), ``train`` (checkpointed training), ``store``
(artifacts keyed by their parameters), ``gradients``, ``methods``, ``metrics``, ``plots``,
``progress`` (bars and stage timings), ``ftrace_experiments`` and ``dda_experiments`` (the
pipelines of Parts I and II), ``results`` and ``claims`` (verdicts and the scoreboard).
"""

import warnings as _warnings

# Inside a notebook without ipywidgets, tqdm.auto falls back to the text bar and warns about it on
# import; the text bar is what we want (the book's pages are rendered without widgets), so the
# warning would only clutter every executed page.
_warnings.filterwarnings("ignore", message="IProgress not found")

__version__ = "0.1.0"
