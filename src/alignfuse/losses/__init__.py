"""Training losses of alignfuse."""
