"""protection-audit: does an image protection survive what exploiters really do?

The engine behind ``pytest --protection=NAME``. See DESIGN in the README for the flow of one
case (protect -> scenario -> exploit -> metrics -> verdict).
"""

__version__ = "0.1.0"
