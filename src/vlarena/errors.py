"""The root of the errors a user can act on. Dependency-free, so every command can catch it."""


class UserInputError(Exception):
    """Bad input from the user (a dataset, a spec, a path): the message says what to change."""
