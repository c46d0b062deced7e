"""Sets Django up in a worker process: `pyscheduler worker orders --import shop.worker`.

The worker imports this module before it takes its first job, so the handler modules it
imports later (orders.tasks, which imports models) find the app registry ready.
"""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop.settings")
django.setup()
