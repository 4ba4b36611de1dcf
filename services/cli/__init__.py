"""``zhiku``: the command line for the gateway's public HTTP API (and ``zhiku up`` for the stack)."""
