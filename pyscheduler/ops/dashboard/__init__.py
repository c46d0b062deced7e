"""The web dashboard (`pyscheduler dashboard`, the `dashboard` extra): `app.create_app`.

This package's `__init__` and `security` import nothing beyond the standard library, so the
command line can name the dashboard's options without the extra installed.
"""
