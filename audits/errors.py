"""The one exception family of embwarden.

Messages name the field or row, what was found and what was expected, and never quote
sampled text or vectors.
"""


class EmbwardenError(Exception):
    """Base of every error embwarden raises on purpose."""


class ConfigError(EmbwardenError):
    """The configuration file is missing, malformed or refers to something unknown."""


class SourceError(EmbwardenError):
    """A source (table, file, database) cannot be read as configured: a missing table or column, a
    column of the wrong dimension. A retry would meet the same; it fails at once."""


class SourceUnavailable(SourceError):
    """A source that cannot be reached or read now (connection refused, dropped, timed out):
    worth retrying the task later."""


class EncoderError(EmbwardenError):
    """An encoder cannot be loaded or called."""


class EncoderUnavailable(EncoderError):
    """An encoder API did not answer usefully after its own retries (down, overloaded, timing out):
    worth retrying the task later, unlike a refused key or a wrong dimension."""


class InvalidSample(EmbwardenError):
    """The sample is empty or holds vectors that cannot have come from the pipeline."""


class ProbeError(EmbwardenError):
    """A probe cannot run on what it was given."""
