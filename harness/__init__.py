"""Instruction-following evaluation harness.

Tasks are YAML files, prompts are Jinja templates (many per task), and every score is keyed by
(task, template id, template hash, shots) so template sensitivity and seen/held-out splits can be
read straight off a run record.
"""

__version__ = "0.1.0"
