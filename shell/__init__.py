"""The interactive prompt_toolkit shell, a client of a node's local HTTP API
(docs/shell.md).

Modules, in dependency order: ``errors``; ``parse`` (lexer and command table),
``paths`` (remote/local path resolution), ``render`` (text) — all sans-I/O;
``session`` (connection and state), ``transfer`` (Ctrl-C-cancellable transfers in
a worker thread), ``commands`` (what each command does), ``completion`` (Tab,
sans-I/O); ``app`` (the prompt_toolkit loop, pager and ``main``).
"""
