"""Platform-aware search (paper section 4): the search space over specs (``space``), and the latency model of
the user's own machine that the search optimises against. Import the modules themselves; this package imports
nothing, so loading it costs nothing and pulls in no optional package."""
