"""Example trainables: `kubetune run examples.<module>:<name>` from the repository root."""
