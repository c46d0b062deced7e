"""One typed wrapper per Lua function of the library, grouped by what the functions do.

Each wrapper passes exactly the keys its Lua file declares, in that order (taken from
`store/operations.py`), and turns the library's error replies into the exceptions of
`pyscheduler.exceptions` (`fcall.py`). Callers use the package: `calls.enqueue(...)`.
"""

from .enqueueing import (
    ENQUEUE_NUMKEYS as ENQUEUE_NUMKEYS,
)
from .enqueueing import (
    EnqueueOutcome as EnqueueOutcome,
)
from .enqueueing import (
    NewJob as NewJob,
)
from .enqueueing import (
    ParentRef as ParentRef,
)
from .enqueueing import (
    SplitPlan as SplitPlan,
)
from .enqueueing import (
    enqueue as enqueue,
)
from .enqueueing import (
    enqueue_args as enqueue_args,
)
from .enqueueing import (
    enqueue_command as enqueue_command,
)
from .enqueueing import (
    enqueue_size as enqueue_size,
)
from .enqueueing import (
    enqueued_ids as enqueued_ids,
)
from .enqueueing import (
    join_enqueue_commands as join_enqueue_commands,
)
from .enqueueing import (
    parse_enqueue_reply as parse_enqueue_reply,
)
from .enqueueing import (
    split_enqueue_reply as split_enqueue_reply,
)
from .fcall import (
    fcall as fcall,
)
from .fcall import (
    fcall_ro as fcall_ro,
)
from .fcall import (
    raise_mapped as raise_mapped,
)
from .fcall import (
    text_of as text_of,
)
from .leases import (
    COMPLETE_FUNCTION as COMPLETE_FUNCTION,
)
from .leases import (
    COMPLETE_MANY_FIXED_KEYS as COMPLETE_MANY_FIXED_KEYS,
)
from .leases import (
    COMPLETE_NUMKEYS as COMPLETE_NUMKEYS,
)
from .leases import (
    POP_NUMKEYS as POP_NUMKEYS,
)
from .leases import (
    Completed as Completed,
)
from .leases import (
    FailedRun as FailedRun,
)
from .leases import (
    Lease as Lease,
)
from .leases import (
    PopResult as PopResult,
)
from .leases import (
    complete as complete,
)
from .leases import (
    complete_args as complete_args,
)
from .leases import (
    complete_many as complete_many,
)
from .leases import (
    complete_many_args as complete_many_args,
)
from .leases import (
    dependent_refs as dependent_refs,
)
from .leases import (
    dependents_from as dependents_from,
)
from .leases import (
    fail as fail,
)
from .leases import (
    fail_run as fail_run,
)
from .leases import (
    new_job_id as new_job_id,
)
from .leases import (
    new_nonce as new_nonce,
)
from .leases import (
    parse_complete_many_reply as parse_complete_many_reply,
)
from .leases import (
    parse_pop_reply as parse_pop_reply,
)
from .leases import (
    pop as pop,
)
from .leases import (
    pop_args as pop_args,
)
from .leases import (
    release as release,
)
from .leases import (
    release_keys as release_keys,
)
from .leases import (
    renew as renew,
)
from .leases import (
    start_run as start_run,
)
from .queue_state import (
    Cancelled as Cancelled,
)
from .queue_state import (
    Counts as Counts,
)
from .queue_state import (
    FetchedJob as FetchedJob,
)
from .queue_state import (
    MetricsReply as MetricsReply,
)
from .queue_state import (
    cancel as cancel,
)
from .queue_state import (
    configure as configure,
)
from .queue_state import (
    counts as counts,
)
from .queue_state import (
    fetch as fetch,
)
from .queue_state import (
    list_jobs as list_jobs,
)
from .queue_state import (
    metrics as metrics,
)
from .queue_state import (
    parse_counts as parse_counts,
)
from .queue_state import (
    parse_metrics as parse_metrics,
)
from .queue_state import (
    pipe_counts as pipe_counts,
)
from .queue_state import (
    pipe_metrics as pipe_metrics,
)
from .queue_state import (
    purge as purge,
)
from .queue_state import (
    retry as retry,
)
from .queue_state import (
    size_limits as size_limits,
)
from .schedules import (
    StoredSchedule as StoredSchedule,
)
from .schedules import (
    list_schedules as list_schedules,
)
from .schedules import (
    pause_schedule as pause_schedule,
)
from .schedules import (
    refill_schedule as refill_schedule,
)
from .schedules import (
    schedule as schedule,
)
from .schedules import (
    set_progress as set_progress,
)
from .schedules import (
    unschedule as unschedule,
)
from .subtasks import (
    ADD_DEPENDENT_NUMKEYS as ADD_DEPENDENT_NUMKEYS,
)
from .subtasks import (
    SUBTASK_DONE_NUMKEYS as SUBTASK_DONE_NUMKEYS,
)
from .subtasks import (
    Notice as Notice,
)
from .subtasks import (
    add_dependent as add_dependent,
)
from .subtasks import (
    add_dependent_args as add_dependent_args,
)
from .subtasks import (
    checkpoint as checkpoint,
)
from .subtasks import (
    dependency_done as dependency_done,
)
from .subtasks import (
    forget_notices as forget_notices,
)
from .subtasks import (
    parse_add_dependent_reply as parse_add_dependent_reply,
)
from .subtasks import (
    split as split,
)
from .subtasks import (
    split_keys as split_keys,
)
from .subtasks import (
    stale_notices as stale_notices,
)
from .subtasks import (
    subtask_done as subtask_done,
)
from .subtasks import (
    subtask_done_args as subtask_done_args,
)
from .subtasks import (
    subtask_outcomes as subtask_outcomes,
)
