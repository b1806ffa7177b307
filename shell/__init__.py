"""The interactive prompt_toolkit shell, a client of a node's local HTTP API."""
