"""The one exception type the user is shown as a message instead of a traceback."""


class UserError(Exception):
    """Bad input or configuration that the user can fix.

    The message must name the file, column, patient, row or config key at fault and,
    where it can, say how to fix it. It must never contain measurement values.
    """
