"""params.yaml's sections, one module per stage section (:mod:`.base` holds what they share).

A stage imports the modules of the sections it reads and nothing else, so that a change to one
section's schema reruns only the stages that read that section (dvc.yaml's deps are the import
closure of each stage's script). The whole file is :mod:`scratchgpt.plumbing.params`.
"""
