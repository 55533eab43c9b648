"""Entry point of ``dramatiq chimeway.worker``: importing it configures Chimeway from the environment.

This is the one module that does work at import, because that is how the Dramatiq CLI finds a
broker and its actors. Applications call ``chimeway.configure()`` instead of importing it.
"""

from chimeway.runtime import configure

runtime = configure()
broker = runtime.broker
