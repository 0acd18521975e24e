"""The download stage's sources, one module per ``download.datasets.<key>.source`` value, each
with ``fetch(name, dataset, out, client, mirror, reuse) -> {file: what it is}``.

stages/download.py imports the one its dataset names, and dvc.yaml lists that module among the
item's deps (``src/scratchgpt/plumbing/sources/${item.source}.py``): a change to the dump's code
reruns the dump's datasets and no other. What every source shares (downloads of single files,
HTTP, the checks of data/raw) is in the stage's own import closure.
"""
