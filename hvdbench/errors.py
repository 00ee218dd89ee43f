"""Every error hvdbench reports to the user as one line, without a traceback.

The CLI catches these and prints ``hvdbench: error: <message>``; the exit code says which:

* :class:`UsageError`, exit 2: bad input, found before any slow work;
* :class:`ClusterError`, exit 1: a task of a gRPC cluster could not be reached or went away;
* :class:`DownloadError`, exit 1: a data set could not be fetched or failed its check.
"""


class UsageError(Exception):
    """Bad input: a config key, value, file or command-line argument.

    The CLI prints the message as a single line, exits with code 2 and writes nothing.
    The message names the offending key or value and what would be valid.
    """

    exit_code = 2


class ClusterError(RuntimeError):
    """A task of the cluster could not be reached or went away: one line, exit 1."""

    exit_code = 1


class DownloadError(Exception):
    """The download or its checks failed; one line for the user, exit code 1."""

    exit_code = 1
