"""The pipeline's plumbing: params, HTTP and downloads, dvc.yaml, staged outputs, resume folders,
logging, plots and the report."""
