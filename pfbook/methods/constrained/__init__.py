"""Domain-constrained diffusion for power-flow records (Hoseinpour & Dvorkin).

The package's public names are gathered here; each lives in the module of its concern.
"""

from pfbook.methods.constrained.config import (  # noqa: F401
    ConstrainedConfig,
)
from pfbook.methods.constrained.figures import (  # noqa: F401
    plot_joint,
    plot_violation_per_bus,
)
from pfbook.methods.constrained.method import (  # noqa: F401
    curvature,
    guidance,
    lambda_schedule,
    make_guidance,
    sweep,
    train_model,
)
from pfbook.methods.constrained.metrics import (  # noqa: F401
    bus_mismatch,
    evaluate,
    feature_w1,
    w1_standard_error,
    within_limits,
)
from pfbook.methods.constrained.projection import (  # noqa: F401
    newton_projection,
)
from pfbook.methods.constrained.records import (  # noqa: F401
    FEATURES,
    RecordData,
    imbalance_residual,
    load_data,
    max_mismatch,
    mismatch,
    mismatch_constraint,
    split_features,
)
from pfbook.methods.constrained.summaries import (  # noqa: F401
    SUMMARY_NAME,
    load_summaries,
    save_summary,
)
