"""Physics-informed DDPM with a learned noise schedule (Wang, Upadhyay, Zaman & Srikantha).

The package's public names are gathered here; each lives in the module of its concern.
"""

from pfbook.methods.physics_informed.config import (  # noqa: F401
    MODELS,
    PAPER_GAMMA_T,
    PAPER_SAMPLES,
    PAPER_TABLE_I,
    PhysicsInformedConfig,
)
from pfbook.methods.physics_informed.data import (  # noqa: F401
    FEATURES,
    PIData,
    imbalance,
    imbalance_fn,
    load_data,
    make_normaliser,
    mismatch_fn,
    operating_bounds,
    split_record,
)
from pfbook.methods.physics_informed.figures import (  # noqa: F401
    plot_diversity,
    plot_schedules,
)
from pfbook.methods.physics_informed.gan import (  # noqa: F401
    GAN,
    Discriminator,
    Generator,
    train_gan,
)
from pfbook.methods.physics_informed.loss import (  # noqa: F401
    physics_activity,
    physics_loss,
)
from pfbook.methods.physics_informed.method import (  # noqa: F401
    ABLATIONS,
    VARIANTS,
    LogitProjection,
    last_step,
    projection_guidance,
    reverse_imbalance,
    train_ddpm,
    train_models,
)
from pfbook.methods.physics_informed.metrics import (  # noqa: F401
    distances,
    evaluate,
    within_bounds,
    within_branch_limits,
)
from pfbook.methods.physics_informed.schedule import (  # noqa: F401
    forward_imbalance,
    gamma,
    gamma_T,
    learn_schedule,
    original_schedule,
    physics_floor,
)
from pfbook.methods.physics_informed.summaries import (  # noqa: F401
    SUMMARY_NAME,
    load_summaries,
    save_summary,
)
