"""`python -m pyscheduler.ops.cli`, as `python -m pyscheduler`."""

from . import main

main()
