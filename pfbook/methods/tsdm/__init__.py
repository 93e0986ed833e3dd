"""TSDM: two-stage diffusion recovery of attacked and lost measurements (Pei, Wang, Shi & Wang).

The package's public names are gathered here; each lives in the module of its concern.
"""

from pfbook.methods.tsdm.baselines import (  # noqa: F401
    Baseline,
    EncoderWGAN,
    LSTMPredictor,
    NearestWindow,
    RobustPCA,
    VAERecovery,
    make_baselines,
    rpca_admm,
)
from pfbook.methods.tsdm.config import (  # noqa: F401
    PMU_EVENTS,
    PMU_SYSTEMS,
    SCADA_DAYS,
    SCADA_SCENARIOS,
    SCADA_SYSTEMS,
    SCENARIOS,
    TSDMConfig,
)
from pfbook.methods.tsdm.diagnostics import (  # noqa: F401
    channel_diagnostics,
    eps_loss_by_step,
    range_check,
)
from pfbook.methods.tsdm.experiments import (  # noqa: F401
    ALGORITHM1,
    BASELINES,
    CORRUPTED,
    HISTORY,
    ORACLE,
    UNCORRUPTED,
    RecoveryTables,
    Scorer,
    corrupt_windows,
    omega_sweep,
    ratio_sweep,
    recovery_table,
    resample_sweep,
    scenarios_for,
    speed_table,
    state_estimation,
    wins_table,
)
from pfbook.methods.tsdm.figures import (  # noqa: F401
    plot_states,
    plot_sweep,
    plot_traces,
)
from pfbook.methods.tsdm.method import (  # noqa: F401
    RULES,
    TSDM,
    Recovery,
    recover,
    train_prior,
)
from pfbook.methods.tsdm.metric import (  # noqa: F401
    channel_weights,
    weighted_rmse,
)
from pfbook.methods.tsdm.states import (  # noqa: F401
    estimate_states,
    measurement_std,
    pseudo_std,
    state_rmse,
    state_weights,
)
from pfbook.methods.tsdm.summaries import (  # noqa: F401
    SUMMARY_NAME,
    save_summary,
    tables_across,
)
from pfbook.methods.tsdm.windows import (  # noqa: F401
    Windows,
    channel_name,
    load_windows,
    pmu_data,
    scada_data,
)
