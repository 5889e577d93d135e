"""tda: training-data attribution for language models, the package behind the book.

Modules, one concern each: ``data`` (worlds and datasets), ``models`` (tokenizer, tiny-model family,
loading real models), ``task`` (example -> loss), ``train`` (checkpointed training), ``store``
(artifacts keyed by their parameters), ``gradients``, ``methods``, ``metrics``, ``plots``.
"""

__version__ = "0.1.0"
