"""The root of the errors a user can act on, and of the failures the platform classifies
(never retried, or stopped on request). Dependency-free, so every command can catch them."""


class UserInputError(Exception):
    """Bad input from the user (a dataset, a spec, a path): the message says what to change."""


class DeterministicFailure(Exception):
    """A failure that another attempt would repeat (a non-finite loss, data that cannot be read):
    never retried."""


class StopRequested(Exception):
    """Work stopped at a safe point because it was asked to (cancel, deadline, shutdown): at a
    step boundary of training, after a checkpoint, or at a progress report of any other phase."""
