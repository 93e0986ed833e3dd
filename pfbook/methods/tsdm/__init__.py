"""TSDM: two-stage diffusion recovery of attacked and lost measurements (Pei, Wang, Shi & Wang).

The package's public names are gathered here; each lives in the module of its concern.
"""
from pfbook.methods.tsdm.baselines import (  # noqa: F401
    Baseline,
    LSTMPredictor,
    rpca_admm,
    RobustPCA,
    VAERecovery,
    EncoderWGAN,
    make_baselines,
)
from pfbook.methods.tsdm.config import (  # noqa: F401
    SCADA_SYSTEMS,
    PMU_SYSTEMS,
    SCADA_DAYS,
    PMU_EVENTS,
    SCENARIOS,
    TSDMConfig,
)
from pfbook.methods.tsdm.diagnostics import (  # noqa: F401
    channel_diagnostics,
    eps_loss_by_step,
    range_check,
)
from pfbook.methods.tsdm.experiments import (  # noqa: F401
    corrupt_windows,
    KEPT,
    recovery_table,
    speed_table,
    omega_sweep,
    resample_sweep,
    ratio_sweep,
    BASELINES,
    wins_table,
    state_estimation,
)
from pfbook.methods.tsdm.figures import (  # noqa: F401
    plot_traces,
    plot_sweep,
    plot_states,
)
from pfbook.methods.tsdm.method import (  # noqa: F401
    train_prior,
    Recovery,
    TSDM,
    recover,
)
from pfbook.methods.tsdm.metric import (  # noqa: F401
    channel_weights,
    weighted_rmse,
)
from pfbook.methods.tsdm.summaries import (  # noqa: F401
    SUMMARY_NAME,
    save_summary,
    tables_across,
)
from pfbook.methods.tsdm.windows import (  # noqa: F401
    Windows,
    channel_name,
    scada_data,
    pmu_data,
    load_windows,
)
