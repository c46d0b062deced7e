"""pyscheduler: a job scheduler on Redis whose brain is a library of atomic Lua functions."""

from .client.job import Job
from .client.queue import Queue
from .client.schedules import Schedule
from .client.splitting import Subtask, SubtaskFailed
from .client.tasks import Task, task
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
    JobExpired,
    JobFailed,
    JobNotFound,
    LeaseLost,
    LibraryError,
    NotDurable,
    PayloadNotJSON,
    PayloadTooLarge,
    PySchedulerError,
    ScheduleNotFound,
    WaitTimeout,
)
from .runtime.context import JobContext, JobSuspended, current_job
from .runtime.worker import Worker
from .store.durability import Durability
from .store.protocol import Status

__version__ = "0.1.0"

__all__ = [
    "Durability",
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
    "JobExpired",
    "JobFailed",
    "JobNotFound",
    "JobSuspended",
    "LeaseLost",
    "LibraryError",
    "NotDurable",
    "PayloadNotJSON",
    "PayloadTooLarge",
    "PySchedulerError",
    "Queue",
    "Schedule",
    "ScheduleNotFound",
    "Status",
    "Subtask",
    "SubtaskFailed",
    "Task",
    "WaitTimeout",
    "Worker",
    "current_job",
    "task",
]
