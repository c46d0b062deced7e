"""pyscheduler: a job scheduler on Redis whose brain is a library of atomic Lua functions."""

from .client.job import Job
from .client.queue import Queue
from .client.splitting import Subtask, SubtaskFailed
from .client.tasks import task
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
from .runtime.context import JobContext, JobSuspended, current_job
from .runtime.worker import Worker
from .store.protocol import Status

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
