"""Landing cost, analytic policy gradient trainer, behaviour cloning, checkpoints, metric
sinks and evaluation."""

from diffland.training.callbacks import (
    JsonlWriter,
    MetricsCallback,
    MetricsHistory,
    ProgressBar,
    TensorBoardWriter,
    WandbWriter,
)
from diffland.training.checkpoint import CheckpointStore
from diffland.training.cost import (
    LandingCost,
    LandingOutcome,
    LandingSummary,
    landing_cost_terms,
    landing_outcome,
    landing_summary_batch,
    landing_summary_rollout,
    summarize_trajectory,
    summary_cost_terms,
    summary_outcome,
)
from diffland.training.evaluation import rollout_outcomes, summarize_outcomes
from diffland.training.imitation import (
    ImitationConfig,
    ImitationResult,
    fit_to_teacher,
    join_pairs,
    student_pairs,
    teacher_pairs,
)
from diffland.training.interrupts import TrainingInterrupted
from diffland.training.memory import InsufficientMemoryError
from diffland.training.parallel import DataParallel
from diffland.training.task import (
    LandingTask,
    batch_landing_summary,
    batch_rollout,
    controller_landing_summary,
    controller_rollout,
    init_controller,
)
from diffland.training.trainer import (
    CHECKS_ENV,
    TrainConfig,
    Trainer,
    TrainResult,
    TrainState,
    lower_training_function,
    make_optimizer,
    training_compiler_options,
)

__all__ = [
    "CHECKS_ENV",
    "CheckpointStore",
    "DataParallel",
    "ImitationConfig",
    "ImitationResult",
    "InsufficientMemoryError",
    "JsonlWriter",
    "LandingCost",
    "LandingOutcome",
    "LandingSummary",
    "LandingTask",
    "MetricsCallback",
    "MetricsHistory",
    "ProgressBar",
    "TensorBoardWriter",
    "WandbWriter",
    "TrainConfig",
    "TrainResult",
    "TrainState",
    "Trainer",
    "TrainingInterrupted",
    "batch_landing_summary",
    "batch_rollout",
    "controller_landing_summary",
    "controller_rollout",
    "fit_to_teacher",
    "init_controller",
    "landing_cost_terms",
    "landing_outcome",
    "landing_summary_batch",
    "landing_summary_rollout",
    "lower_training_function",
    "training_compiler_options",
    "make_optimizer",
    "rollout_outcomes",
    "summarize_outcomes",
    "summarize_trajectory",
    "summary_cost_terms",
    "summary_outcome",
    "join_pairs",
    "student_pairs",
    "teacher_pairs",
]
