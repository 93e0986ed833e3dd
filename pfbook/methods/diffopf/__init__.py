"""DiffOPF: OPF warm starts sampled from a diffusion prior (Hoseinpour & Dvorkin), against DeepOPF.

The package's public names are gathered here; each lives in the module of its concern.
"""

from pfbook.methods.diffopf.config import (  # noqa: F401
    GRID_LABELS,
    LARGE_GRID,
    LARGE_GRID_DEFAULT,
    LARGE_GRID_PREDICTION,
    PROFILE_GRIDS,
    DiffOPFConfig,
)
from pfbook.methods.diffopf.data import (  # noqa: F401
    FEATURES,
    OPFRecords,
    load_records,
)
from pfbook.methods.diffopf.deepopf import (  # noqa: F401
    DeepOPF,
    train_deepopf,
)
from pfbook.methods.diffopf.experiments import (  # noqa: F401
    GridRun,
    run_grid,
    steps_tradeoff,
)
from pfbook.methods.diffopf.figures import (  # noqa: F401
    plot_marginals,
    plot_tradeoff,
)
from pfbook.methods.diffopf.history import (  # noqa: F401
    nearest_records,
)
from pfbook.methods.diffopf.method import (  # noqa: F401
    conditional_guidance,
    sample_dispatch,
    train_prior,
)
from pfbook.methods.diffopf.metrics import (  # noqa: F401
    LIMIT_TOL,
    WITHIN_FLOOR,
    best_per_load,
    evaluate_warm_starts,
    oracle_pick,
    paper_table_one,
    paper_table_two,
    prior_balance,
    table_one,
    table_two,
    user_pick,
)
from pfbook.methods.diffopf.summaries import (  # noqa: F401
    SUMMARY_NAME,
    TABLE_INDEX,
    load_tables,
    save_summary,
    speed_across,
)
