"""Pure core of the operator: plain functions over plain data, the clock passed in.

Nothing in this package performs I/O; the adapters do, and the kopf handlers glue the two.
"""
