"""The course around the method: notebook setup, student copies of the tutorials, the doctor, the toy task.

The exercise checkers live beside it in minicastling.check, the name students import.
"""
