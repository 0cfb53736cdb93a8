"""The one exception every refusal raises: a run that cannot work, with a message that names the fix.

It lives apart from the schemas so that the lowest wings (runtime, data) can refuse a value without
importing Hydra's ConfigStore and every dataclass.
"""


class ConfigError(ValueError):
    """A run configuration that cannot work; the message says what to change."""
