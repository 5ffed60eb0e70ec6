"""The one error type the command line turns into a one-line message and exit code 2."""


class UserError(Exception):
    """Bad input from the user: unknown name, value out of range, missing data, malformed file."""
