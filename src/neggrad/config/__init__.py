"""One validated config tree: YAML in, dotted command-line overrides, clear errors out.

Keys follow TRL's ``GRPOConfig`` where the concept exists there (``num_generations``, ``beta``,
``epsilon``, ``epsilon_high``, ``loss_type``, ``scale_rewards``, ``num_iterations``,
``per_device_train_batch_size``, ``gradient_accumulation_steps``, ``steps_per_generation``,
``max_completion_length``, ``temperature``, ``top_p``, ``learning_rate``, ``seed``).
Each field's docstring is its help text (``use_attribute_docstrings``).
"""

from neggrad.config.algorithms import (
    HintConfig,
    LENSConfig,
    LLDConfig,
    LLDSConfig,
    NGRPOConfig,
    NTHRConfig,
    RandomRewardConfig,
    RLZVPConfig,
    THRConfig,
    WReinforceConfig,
    ZeroVarianceConfig,
)
from neggrad.config.base import NTHR_ESTIMATORS, ConfigError
from neggrad.config.feedback import FeedbackConfig, FeedbackHTTPConfig, FeedbackLocalConfig, FeedbackNoiseConfig
from neggrad.config.load import (
    RESUME_KEYS,
    build_config,
    check_resume_changes,
    config_changes,
    dump_config,
    load_config,
    parse_override,
    read_yaml,
)
from neggrad.config.model import (
    ColumnsConfig,
    DataConfig,
    LoraConfig,
    ModelConfig,
    RewardConfig,
    RolloutConfig,
    SFTConfig,
    TaskConfig,
    TestbedModelConfig,
    VLLMConfig,
)
from neggrad.config.schema import SCHEDULERS, TRACKERS, BudgetConfig, Config, NonFiniteConfig

__all__ = [
    "NTHR_ESTIMATORS",
    "RESUME_KEYS",
    "SCHEDULERS",
    "TRACKERS",
    "BudgetConfig",
    "ColumnsConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "FeedbackConfig",
    "FeedbackHTTPConfig",
    "FeedbackLocalConfig",
    "FeedbackNoiseConfig",
    "HintConfig",
    "LENSConfig",
    "LLDConfig",
    "LLDSConfig",
    "LoraConfig",
    "ModelConfig",
    "NGRPOConfig",
    "NTHRConfig",
    "NonFiniteConfig",
    "RLZVPConfig",
    "RandomRewardConfig",
    "RewardConfig",
    "RolloutConfig",
    "SFTConfig",
    "THRConfig",
    "TaskConfig",
    "TestbedModelConfig",
    "VLLMConfig",
    "WReinforceConfig",
    "ZeroVarianceConfig",
    "build_config",
    "check_resume_changes",
    "config_changes",
    "dump_config",
    "load_config",
    "parse_override",
    "read_yaml",
]
