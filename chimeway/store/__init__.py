"""State the processes share: the delivery tables' writers and read API, the schema runner, and the
Redis keys (SET NX claims) and channels (broadcasts) (docs/architecture.md §2)."""
