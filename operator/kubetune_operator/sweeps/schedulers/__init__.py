"""The sweep controller's view of a scheduler, pure: the interface and FIFO
(base), the early-stopping rules (stopping: ASHA, median), population based
training (population), and the registry that makes the one a sweep names.

Each wraps an algorithm of `sweeps.algorithms` in one shape: which trial needs
a decision, the decision made from a trial's results, and the replay of the
decisions recorded on the trials, so a scheduler's state is rebuilt from the
trials after any restart.
"""
