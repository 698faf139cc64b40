"""The sez-watcher daemon (design §6-§7): follow logs, verify, cosign with slashing protection."""
