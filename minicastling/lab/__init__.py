"""The lab: timing, statistics, the speed benchmark, the study of what the softmax branch buys, figures.

`python -m minicastling bench` and `python -m minicastling study` write results/*.json, which the
README and tutorial 07 read.
"""
