"""The course around the method: notebook setup, the doctor, student copies of the tutorials, the toy task.

The exercise checkers live beside it in minicastling.check, the name students import.
"""

from .doctor import doctor
from .notebook import setup

__all__ = ["doctor", "setup"]
