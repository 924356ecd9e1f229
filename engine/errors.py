"""The error a user's input raises, apart from the config models: the CLI imports it at start-up
without pydantic (engine.config's models cost about half of `cifar-tui --help`'s start)."""


class ConfigError(ValueError):
    """A config (file, name or override) a user wrote is not valid."""
