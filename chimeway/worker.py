"""Entry point of ``dramatiq chimeway.worker``: importing it configures Chimeway from the environment.

This is the one module that does work at import, because that is how the Dramatiq CLI finds a
broker and its actors: settings → database → broker (Redis, with explicit heartbeat and maintenance)
→ middleware (DatabaseConnections, ExhaustionGuard) → actors, and checks that every adapter the
settings name has its required options (other commands check an adapter only when it is used), then Dramatiq's global broker is set
to it for the command line. Applications call ``chimeway.configure()`` instead of importing it.
"""

import dramatiq

from chimeway.wiring.runtime import configure

runtime = configure()
runtime.registry.check()  # a worker performs sends: every adapter the settings name needs its secrets now
broker = runtime.broker
dramatiq.set_broker(broker)
