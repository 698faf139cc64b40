"""The sez-node daemon and its command-line tools."""
