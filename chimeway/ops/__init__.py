"""Operating Chimeway: the command line, the demo, status, the periodic jobs' scheduler, retention,
redrive and the operator record and timeline (docs/architecture.md §2)."""
