"""The base of every expected failure: bad params, a download that failed from every source,
corrupt data, a diverged run. Stage scripts print these as one clear message, no traceback."""


class PipelineError(Exception):
    """An error whose message tells the user what is wrong and what to do."""
