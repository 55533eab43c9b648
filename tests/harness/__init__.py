"""Support for the chaos and bench harnesses: private servers, supervised processes, progress.

Nothing here touches the shared PostgreSQL (5432) or Redis (6379): every server is started on a
free loopback port in a temporary directory and torn down afterwards — also when the harness
itself dies, through a small reaper process that outlives it (:mod:`tests.harness.reaper`).
"""
