"""pyscheduler: a job scheduler on Redis whose brain is a library of atomic Lua functions."""

from .context import JobContext, JobSuspended, current_job
from .exceptions import (
    HandlerRefused,
    HandlerUnavailable,
    InvalidInput,
    InvalidJobId,
    InvalidJobState,
    InvalidOption,
    InvalidQueueName,
    InvalidURL,
    JobCancelled,
    JobFailed,
    JobNotFound,
    LeaseLost,
    LibraryError,
    PayloadNotJSON,
    PayloadTooLarge,
    PySchedulerError,
    WaitTimeout,
)
from .handlers import task
from .job import Job
from .protocol import Status
from .queue import Queue
from .splitting import Subtask, SubtaskFailed
from .worker import Worker

__version__ = "0.1.0"

__all__ = [
    "HandlerRefused",
    "HandlerUnavailable",
    "InvalidInput",
    "InvalidJobId",
    "InvalidJobState",
    "InvalidOption",
    "InvalidQueueName",
    "InvalidURL",
    "Job",
    "JobCancelled",
    "JobContext",
    "JobFailed",
    "JobNotFound",
    "JobSuspended",
    "LeaseLost",
    "LibraryError",
    "PayloadNotJSON",
    "PayloadTooLarge",
    "PySchedulerError",
    "Queue",
    "Status",
    "Subtask",
    "SubtaskFailed",
    "WaitTimeout",
    "Worker",
    "current_job",
    "task",
]
