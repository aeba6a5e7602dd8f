"""The engine's error tree and exit codes.

    EngineError                      base; every error the CLI reports without a traceback
    ├── ConfigError                  the job file is wrong (exit 2); lists every problem at once
    ├── JobLockedError               another run of the same job holds the lock (exit 3)
    ├── SourceError / TargetError    a database refused something or is unreachable (exit 69)
    │     (marked TransientError when a retry may help: connection lost, server restarting, deadlock)
    │     └── SnapshotLost             the session holding the run's source snapshot is gone (re-taken, or
    │                                  exit 69 with `source.snapshot = "strict"`)
    ├── StagingError                 the staging directory cannot be written: disk full, no permission (exit 73)
    ├── WorkerLost                   Dask gave up on a partition whose workers kept dying (exit 69)
    ├── ErrorBudgetExceeded          more bad rows than `validate.max_error_rate` allows (exit 65)
    │     └── RuleFailed             a `fail` rule failed, or a rule's budget was exceeded (exit 65)
    └── VerificationError            target and source disagree after loading (exit 66)

Retry logic only asks "is it transient?"; everything else fails the partition at once. The database adapters
(`engine.source` for ConnectorX, `engine.pg` for ADBC) translate driver errors into this tree at the edge.
"""

from __future__ import annotations

# What a lost or refused connection says, in any of the drivers' wordings (libpq, MySQL, Rust I/O errors).
TRANSIENT_WORDS = ("connection refused", "server closed the connection", "connection reset", "broken pipe",
                   "terminating connection", "could not connect", "no connection to the server",
                   "the database system is", "timed out", "closed", "shutting down", "lost connection", "gone away",
                   "08006", "57p01", "unexpected eof", "connection error", "i/o error", "error communicating",
                   "kind: io", "bytes remaining on stream")


def sounds_transient(message: str) -> bool:
    """Whether a driver's message describes a connection that was lost or refused (a retry may help)."""
    text = message.lower()
    return any(word in text for word in TRANSIENT_WORDS)

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_CONFIG = 2
EXIT_LOCKED = 3
EXIT_ERROR_BUDGET = 65
EXIT_VERIFICATION = 66
EXIT_UNAVAILABLE = 69
EXIT_STAGING = 73

EXIT_CODES: dict[int, str] = {
    EXIT_OK: "the job succeeded (bad rows, if any, are in the quarantine and within the budget)",
    EXIT_INTERNAL: "unexpected internal error, including an exception raised by a rules module: the traceback is "
                   "printed, the run is recorded as failed, committed partitions are kept and a rerun resumes",
    EXIT_CONFIG: "the job file or command line is invalid; nothing was touched",
    EXIT_LOCKED: "another run of the same job is in progress (or took this one over); this one wrote nothing more",
    EXIT_ERROR_BUDGET: "too many rows failed validation (validate.max_error_rate); finished partitions are kept",
    EXIT_VERIFICATION: "verification found target and source disagree",
    EXIT_UNAVAILABLE: "a database refused or stayed unreachable after retries; rerun to resume",
    EXIT_STAGING: "the staging directory could not be written (disk full, no permission); rerun to resume",
}

RESUME = "committed partitions are kept: rerun to resume"


class EngineError(Exception):
    """Base of all errors the engine reports as a message rather than a traceback."""

    exit_code = EXIT_INTERNAL


class ConfigError(EngineError):
    """The job configuration is invalid. Holds every problem found, not just the first."""

    exit_code = EXIT_CONFIG

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{path}: {len(problems)} problem(s) in the job configuration:\n{lines}")

    def __reduce__(self) -> tuple[type[ConfigError], tuple[str, list[str]]]:  # raised on a Dask worker too
        return ConfigError, (self.path, self.problems)


class JobLockedError(EngineError):
    exit_code = EXIT_LOCKED


class SourceError(EngineError):
    exit_code = EXIT_UNAVAILABLE


class TargetError(EngineError):
    exit_code = EXIT_UNAVAILABLE


class SnapshotLost(SourceError):
    """The session holding the run's exported source snapshot ended (restart, failover, terminated backend, idle
    timeout): a read can no longer import it. Not retried by the partition: the run takes a new snapshot."""


class StagingError(EngineError):
    exit_code = EXIT_STAGING


class TransientError(EngineError):
    """Marker: the operation may succeed if retried (connection lost, server restarting, deadlock)."""

    exit_code = EXIT_UNAVAILABLE


class WorkerLost(EngineError):
    exit_code = EXIT_UNAVAILABLE


class ErrorBudgetExceeded(EngineError):
    exit_code = EXIT_ERROR_BUDGET


class RuleFailed(ErrorBudgetExceeded):
    """A validation rule with severity "fail" failed, or a rule's own budget was exceeded (exit 65)."""


class OrphanRows(ErrorBudgetExceeded):
    """A whole-database job's source has rows whose foreign key has no parent, and the policy is `fail`."""


class VerificationError(EngineError):
    exit_code = EXIT_VERIFICATION


def with_advice(exc: BaseException) -> BaseException:
    """An error that ends a run, saying what to do: a database or staging error gets "rerun to resume" (a rerun
    resumes the run) unless its message already says what to do."""
    if type(exc) not in (SourceError, TargetError, TransientError, SnapshotLost, StagingError, WorkerLost):
        return exc
    text = str(exc)
    if "rerun" in text:
        return exc
    advised = type(exc)(f"{text}; {RESUME}")
    for name, value in vars(exc).items():
        setattr(advised, name, value)
    return advised
