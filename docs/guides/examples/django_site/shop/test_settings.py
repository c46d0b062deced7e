"""The settings of the project's tests: `python manage.py test --settings shop.test_settings`."""

from .settings import *  # noqa: F403

PYSCHEDULER_EAGER = True  # jobs run inline, at enqueue, inside the test's transaction
