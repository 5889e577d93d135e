"""Per-example gradient features and dot products: the engine behind TracIn, TRAK and DDA.

One concern per module:

- ``groups``: which parameters (``"all"``, ``"embedding"``, ``"block.i"``, ``"head"``, a regular
  expression or a list) and how they split into units;
- ``per_example``: per-example gradients by ``torch.func.vmap`` or a loop of single backwards,
  optionally divided by AdamW's second moments (optimizer correction);
- ``sketch``: the count sketch, the default projection (a dense projection's accuracy, computed
  from the hooks' factors by FFT);
- ``projection``: which projector a dimension makes, and the Kronecker / dense ``Projector``, with
  inner-product error bounds;
- ``hooks``: projected features from one batched backward (about the cost of a training step);
- ``features``: feature rows by the fastest path that applies, and feature files on disk;
- ``dots``: exact query-candidate dot products accumulated tensor by tensor, per unit and per
  correction (TracIn, DDA).

Checkpoints (paths or models, optimizer state) are ``tda.checkpoints``' concern. The names below
are the package's public API, importable from ``tda.gradients`` directly.
"""

from .dots import GradientDots, UnitDots, gradient_dots, unit_gradient_dots
from .features import feature_dim, feature_params, gradient_features, load_features, save_features
from .groups import GroupSpec, parameter_names, parameter_units, select_parameters, unit_order
from .hooks import HooksUnsupported, hook_features, hooks_supported
from .per_example import DEFAULT_EPS, NonFiniteGradientError, check_examples, eval_mode, iter_gradients
from .projection import DEFAULT_KIND, AnyProjector, Projector, as_projector
from .sketch import SketchProjector

__all__ = ["GroupSpec", "parameter_names", "select_parameters", "parameter_units", "unit_order", "DEFAULT_EPS",
           "NonFiniteGradientError", "check_examples", "eval_mode", "iter_gradients", "Projector", "SketchProjector",
           "AnyProjector", "DEFAULT_KIND", "as_projector",
           "HooksUnsupported", "hooks_supported", "hook_features", "feature_dim", "gradient_features",
           "save_features", "load_features", "feature_params", "GradientDots", "UnitDots", "unit_gradient_dots",
           "gradient_dots"]
