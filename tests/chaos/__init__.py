"""``make chaos``: faults survived, nothing lost — Chimeway under SIGKILLs, server restarts and bad webhooks."""
