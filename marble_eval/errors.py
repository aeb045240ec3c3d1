"""The one exception type the command line turns into a one-line message."""


class MarbleEvalError(Exception):
    """A user-facing error: its message is one line naming the file or value and the fix."""


class AudioError(MarbleEvalError):
    """An audio file that cannot be used (unreadable, empty, NaN, unsupported)."""
