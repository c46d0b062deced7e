"""pyscheduler: a job scheduler on Redis whose brain is a library of atomic Lua functions."""

from .exceptions import (
    HandlerRefused,
    InvalidInput,
    InvalidJobId,
    InvalidJobState,
    InvalidOption,
    InvalidQueueName,
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
from .worker import Worker

__version__ = "0.1.0"

__all__ = [
    "HandlerRefused",
    "InvalidInput",
    "InvalidJobId",
    "InvalidJobState",
    "InvalidOption",
    "InvalidQueueName",
    "Job",
    "JobCancelled",
    "JobFailed",
    "JobNotFound",
    "LeaseLost",
    "LibraryError",
    "PayloadNotJSON",
    "PayloadTooLarge",
    "PySchedulerError",
    "Queue",
    "Status",
    "WaitTimeout",
    "Worker",
    "task",
]
