"""Dispatch: send & enqueue, the actors, their middleware, the sweep and the broker wiring.

The actors exist per configured runtime (bound to its broker): ``runtime.actors["deliver"]``,
``["sweep_actor"]`` and ``["reconcile_orphans"]`` (docs/architecture.md §5).
"""
