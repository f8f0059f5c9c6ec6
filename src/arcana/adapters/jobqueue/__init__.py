"""Job queue backends: Redis (Lua scripts on sorted sets and hashes) and SQL."""
