"""Errors that hvdbench reports to the user as one line with exit code 2."""


class UsageError(Exception):
    """Bad input: a config key, value, file or command-line argument.

    The CLI prints the message as a single line, exits with code 2 and writes nothing.
    The message names the offending key or value and what would be valid.
    """

    exit_code = 2
