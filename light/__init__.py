"""``sez-light``: the light client (design §11). Depends on ``protocol`` and the standard library only.

``light.cli`` is the command line (``verify``, ``follow``); ``light.follow`` polls a node and keeps
per-origin state on disk. Every decision is made by ``protocol`` (``protocol.light.verify_bundle``,
``protocol.light_follow``), so a light client, a watcher and a node agree because they run the same
functions; this package only reads files, talks HTTP and prints.
"""
