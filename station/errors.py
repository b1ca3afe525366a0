"""The station's named refusals, each with the exit code its commands return (station/README.md).

An action raises one of these with a message a clerk can act on; the command line maps it
to its exit code and the web interface to a page. Nothing is written when one is raised.
"""
from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1        # a check failed (verify found something; a docking was quarantined)
EXIT_USAGE = 2         # bad arguments, bad configuration, invalid input
EXIT_REFUSED = 3       # not allowed (role, approval, self-approval) or device refused
EXIT_PARTIAL = 4       # docking: some files quarantined, the rest stored
EXIT_NOT_FOUND = 5     # no such recording, case, user, request, export
EXIT_CONFLICT = 6      # the state forbids it: purged, held, still in retention, already decided
EXIT_UNAVAILABLE = 7   # the catalogue or the store cannot be used now (database gone, disk full)
EXIT_INTERRUPTED = 75  # docking interrupted: run again to resume


class StationError(Exception):
    exit_code = EXIT_FAILED


class InvalidInput(StationError, ValueError):
    exit_code = EXIT_USAGE


class NotAllowed(StationError):
    """The user's role or the access rules (S8) do not allow it; the attempt is audited."""

    exit_code = EXIT_REFUSED


class NotFound(StationError, LookupError):
    exit_code = EXIT_NOT_FOUND


class Conflict(StationError):
    exit_code = EXIT_CONFLICT


class Unavailable(StationError):
    exit_code = EXIT_UNAVAILABLE
