"""The project's own error types: the CLI prints their message on one line and exits non-zero."""


class ResNetError(Exception):
    """Base class: an expected failure with a message that says what went wrong and how to fix it."""


class ConfigError(ResNetError, ValueError):
    """A bad option, flag, recipe or config value."""


class ModelError(ResNetError, ValueError):
    """An unknown model name or an invalid model option."""


class WeightsError(ResNetError):
    """A weights or checkpoint file that is missing, truncated, unsafe or for another architecture."""


class DataError(ResNetError):
    """Missing, corrupt or malformed data."""


class TrainingError(ResNetError):
    """A run that cannot go on (NaN/Inf loss, a lost distributed peer)."""
