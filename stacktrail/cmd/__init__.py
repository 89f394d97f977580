"""Console scripts: ``stacktrail`` (cli) and ``stacktrail-agent`` (agent)."""
