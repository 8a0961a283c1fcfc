"""Networks of alignfuse (fusion, registration and translation models)."""
