"""Errors a user can cause.

A UserError carries one clear sentence. Front ends print it and exit non-zero without a
traceback; anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's input (preset, key, path, data, checkpoint, device)."""

    exit_code = 2
