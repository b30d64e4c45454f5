"""The one exception type a user is meant to see.

Anything raised as `HarnessError` is bad input or a bad environment, not a bug: the CLI prints its
message as a single line and exits with status 2. The message must name the file, row or field at
fault and say what to do about it.
"""


class HarnessError(Exception):
    """A user-facing error whose message is one actionable line."""
