"""DiffOPF: OPF warm starts sampled from a diffusion prior (Hoseinpour & Dvorkin), against DeepOPF.

The package's public names are gathered here; each lives in the module of its concern.
"""
from pfbook.methods.diffopf.config import (  # noqa: F401
    GRID_LABELS,
    PROFILE_GRIDS,
    LARGE_GRID,
    LARGE_GRID_DEFAULT,
    LARGE_GRID_PREDICTION,
    DiffOPFConfig,
)
from pfbook.methods.diffopf.data import (  # noqa: F401
    OPFRecords,
    FEATURES,
    load_records,
)
from pfbook.methods.diffopf.deepopf import (  # noqa: F401
    DeepOPF,
    train_deepopf,
)
from pfbook.methods.diffopf.experiments import (  # noqa: F401
    steps_tradeoff,
    GridRun,
    run_grid,
)
from pfbook.methods.diffopf.figures import (  # noqa: F401
    plot_marginals,
    plot_tradeoff,
)
from pfbook.methods.diffopf.history import (  # noqa: F401
    nearest_records,
)
from pfbook.methods.diffopf.method import (  # noqa: F401
    train_prior,
    conditional_guidance,
    sample_dispatch,
)
from pfbook.methods.diffopf.metrics import (  # noqa: F401
    LIMIT_TOL,
    evaluate_warm_starts,
    user_pick,
    oracle_pick,
    prior_balance,
    best_per_load,
    table_one,
    paper_table_one,
    table_two,
    paper_table_two,
    WITHIN_FLOOR,
)
from pfbook.methods.diffopf.summaries import (  # noqa: F401
    SUMMARY_NAME,
    save_summary,
    speed_across,
    TABLE_INDEX,
    load_tables,
)
