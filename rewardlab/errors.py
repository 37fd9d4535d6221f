"""The mistakes a user can make, told apart from bugs.

Every exception here is a :class:`UserError`: the command line prints its message as one line (``error: ...``) and
exits with status 2, never a traceback; anything else that ends a command is a bug in rewardlab (status 1). The
subclasses say where the mistake lies, so that code can catch one kind (a bad data row) without the others.
"""

from __future__ import annotations


class UserError(Exception):
    """Something the user gave cannot be used as it stands; the message says what and how to fix it."""

    exit_status = 2
    reported = False  # True once it has been printed (a distributed run's processes print as they stop)


class RecipeError(UserError, ValueError):
    """A recipe key is unknown, mistyped or out of range (or a command-line option is)."""


class DataError(UserError, ValueError):
    """A data file or row cannot be used; the message names the file and line (or row)."""


class ScoringError(DataError):
    """An input a model cannot score (bad messages, a chat template that raises, a model that is not a reward
    model); the message says why."""


class TrainingError(UserError):
    """Training cannot go on as the recipe stands: a non-finite loss or gradient, an unreadable checkpoint, a run
    whose rewards collapsed. The fix is in the recipe, the data or the output folder."""


class UntrustedModelError(UserError):
    """A model rewardlab will not load as it stands: pickle weights only, or code of its own not trusted."""


class AveragingError(UserError):
    """Models that cannot be averaged; the message says which and why."""


class RunFailed(UserError):
    """A child training process failed (``rewardlab compare``); it has printed why."""
