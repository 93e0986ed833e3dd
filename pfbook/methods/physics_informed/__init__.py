"""Physics-informed DDPM with a learned noise schedule (Wang, Upadhyay, Zaman & Srikantha).

The package's public names are gathered here; each lives in the module of its concern.
"""
from pfbook.methods.physics_informed.config import (  # noqa: F401
    PAPER_TABLE_I,
    PAPER_GAMMA_T,
    PAPER_SAMPLES,
    MODELS,
    PhysicsInformedConfig,
)
from pfbook.methods.physics_informed.data import (  # noqa: F401
    FEATURES,
    PIData,
    split_record,
    operating_bounds,
    make_normaliser,
    load_data,
    imbalance,
    imbalance_fn,
    mismatch_fn,
)
from pfbook.methods.physics_informed.figures import (  # noqa: F401
    plot_schedules,
    plot_diversity,
)
from pfbook.methods.physics_informed.gan import (  # noqa: F401
    Generator,
    Discriminator,
    GAN,
    train_gan,
)
from pfbook.methods.physics_informed.loss import (  # noqa: F401
    physics_activity,
    physics_loss,
)
from pfbook.methods.physics_informed.method import (  # noqa: F401
    train_ddpm,
    VARIANTS,
    ABLATIONS,
    train_models,
    reverse_imbalance,
    last_step,
    LogitProjection,
    projection_guidance,
)
from pfbook.methods.physics_informed.metrics import (  # noqa: F401
    within_bounds,
    within_branch_limits,
    distances,
    evaluate,
)
from pfbook.methods.physics_informed.schedule import (  # noqa: F401
    gamma_T,
    gamma,
    original_schedule,
    learn_schedule,
    forward_imbalance,
    physics_floor,
)
from pfbook.methods.physics_informed.summaries import (  # noqa: F401
    SUMMARY_NAME,
    save_summary,
    load_summaries,
)
