"""Weak-scaling studies: plan and run a sweep, read its records, report, plot, predict.

A study is a folder of JSON records, one per run (plus one per failed point), written by
``hvdbench run`` and ``hvdbench sweep``. Everything here reads records by their shared
format (``benchmark.write_record``) and never branches on the mode.
"""
