"""kubetune's operator: runs TrainableJob resources as worker pods and keeps their status true."""

__version__ = "0.1.0"
