"""The client: queues, jobs, subtasks and the task registry that producers use."""
