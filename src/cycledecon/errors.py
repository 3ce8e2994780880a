"""The one exception type for problems a user can fix (bad file, bad sheet, bad config)."""


class CycledeconError(Exception):
    """A user-facing problem: caught at the CLI/script boundary and printed as one line."""
