"""The node's SFTP server (docs/sftp.md): an adapter next to ``p2pstore.web`` that
serves the drives through SSH's file transfer protocol, built on asyncssh.

Modules, lowest first: ``errors`` (the package's exceptions), ``users`` (the users
file, pure), ``paths`` (client paths to drive paths, pure), ``mtimes`` (the
modification times clients set), ``fs`` (the file operations over an
``app.contract.Application``, no SSH), ``handler`` (the asyncssh ``SFTPServer``
glue), ``server`` (host key, logins, listening). Node assembly starts it
(``p2pstore.node.sftp_wiring``).
"""
