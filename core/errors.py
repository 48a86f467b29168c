"""Errors a user can cause.

A UserError carries one clear sentence. Front ends print it and exit non-zero without a
traceback; anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's input (preset, key, path, data, checkpoint, device)."""

    exit_code = 2


class TrainingFailed(Exception):
    """The run cannot go on (for example a non-finite loss); the message is one sentence for the user."""

    exit_code = 3
