"""Errors more than one module raises, in a module of their own so that none imports another for them."""


class DataError(Exception):
    """A dataset file is missing, unreachable, corrupt, or not the data it claims to be."""
