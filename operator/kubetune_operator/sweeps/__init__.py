"""TrainableSweeps: many TrainableJobs (trials) searching a space, in four
parts, from I/O down to the standard library: the reconcile (controller.py),
what a sweep should look like (plan.py, pure), the controller's view of a
scheduler (schedulers/, pure) and the search algorithms (algorithms/,
standard library only).
"""
