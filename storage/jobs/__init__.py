"""Background jobs: one registry of periodic jobs, run by procrastinate on PostgreSQL or in-process on SQLite.

See storage/jobs/README.md for why procrastinate, and storage/jobs/runner.py for the entry points.
"""
