"""The exception types the command line turns into one-line messages, and its exit codes."""

# Exit codes of the `marble-eval` command (documented in README "Command line").
EXIT_OK = 0
EXIT_FAILED = 1           # an unexpected error (a bug): the traceback is printed
EXIT_USER_ERROR = 2       # bad input: one line naming the file or value and the fix
EXIT_NOTHING_EXTRACTED = 3  # extract: not one item could be extracted
EXIT_SOME_SKIPPED = 4     # extract: done, but some items were skipped (listed in failures.json)


class MarbleEvalError(Exception):
    """A user-facing error: its message is one line naming the file or value and the fix."""


class AudioError(MarbleEvalError):
    """An audio file that cannot be used (unreadable, empty, NaN, unsupported)."""
EXIT_SUITE_INCOMPLETE = 5   # eval of several pairs: some pairs failed (the summary lists them)
