"""The runtime: the worker, its children, leases, reporting, waiting for work, the job context."""
