"""The tuning module: FLAN-style mixtures from the evaluation tasks, a trainer, and a manifest of what was seen.

The mixture is rendered by the same Planner that renders evaluation prompts, and the manifest written
beside a checkpoint is what evaluation reads to label each (task, template) seen or held out.
"""
