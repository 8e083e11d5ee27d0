"""A run, on a laptop or in a worker pod: the loop and its parts (run state,
checkpoint keeper, progress sink, drivers for classes and functions), the
writer thread and the progress push, signals, loading a trainable by name or
by value, and what a process prints and exits with."""
