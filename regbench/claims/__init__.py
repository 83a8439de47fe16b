"""Claims: the registry schema, the measures, the statistics and the verdicts; adaptive repeats; drift."""
