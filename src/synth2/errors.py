"""The one exception type a stage turns into a one-line error and a non-zero exit."""


class Synth2Error(Exception):
    """A user-facing failure: bad params, a missing or corrupt input, a failed gate.

    The message is a single line that names the file or key and says how to fix it.
    """
