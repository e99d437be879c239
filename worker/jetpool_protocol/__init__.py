"""The wire contract between the jetpool operator, its workers and publishers.

One home for every name, header, subject and message shape that crosses a process boundary:
the task envelope, the dead-letter record, the control state the operator publishes for
workers (circuit breaker), the stats workers publish for the operator, and the worker's
env contract. Both sides import this package; nothing else defines these shapes.
"""
