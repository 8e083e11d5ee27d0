"""kubetune's version, recorded in the checkpoints and shipped code it writes;
kubetune.__version__ re-exports it."""

VERSION = "0.1.0"
