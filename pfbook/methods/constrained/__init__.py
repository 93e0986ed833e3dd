"""Domain-constrained diffusion for power-flow records (Hoseinpour & Dvorkin, seed 000).

The package's public names are gathered here; each lives in the module of its concern.
"""
from pfbook.methods.constrained.method import (  # noqa: F401
    ConstrainedConfig,
    train_model,
    lambda_schedule,
    curvature,
    guidance,
    sampler,
    draw,
    make_guidance,
    sweep,
    newton_projection,
    within_limits,
    VARYING_STD,
    feature_w1,
    w1_standard_error,
    bus_mismatch,
    evaluate,
    SUMMARY_NAME,
    save_summary,
    load_summaries,
    plot_joint,
    plot_violation_per_bus,
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
