"""How a process is put together: settings, the adapter registry, the runtime that wires settings →
database → registry → broker → actors, and the log context (docs/architecture.md §2)."""
