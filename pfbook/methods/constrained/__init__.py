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
    train_model,
    lambda_schedule,
    curvature,
    guidance,
    make_guidance,
    sweep,
)
from pfbook.methods.constrained.metrics import (  # noqa: F401
    within_limits,
    feature_w1,
    w1_standard_error,
    bus_mismatch,
    evaluate,
)
from pfbook.methods.constrained.projection import (  # noqa: F401
    newton_projection,
)
from pfbook.methods.constrained.records import (  # noqa: F401
    FEATURES,
    RecordData,
    load_data,
    split_features,
    mismatch,
    max_mismatch,
    imbalance_residual,
    mismatch_constraint,
)
from pfbook.methods.constrained.summaries import (  # noqa: F401
    SUMMARY_NAME,
    save_summary,
    load_summaries,
)
