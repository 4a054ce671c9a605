"""Platform-aware search (paper section 4): the search space over specs (``space``), the latency model of the
user's own machine that the search optimises against (``latency_table``, ``table_builder``, ``predictor``), and
NetAdapt on it (``netadapt``, section 4.2) and platform-aware NAS with an RNN controller (``nas``,
``controller``, ``reward``, section 4.1). Import the modules themselves; this package imports nothing, so loading
it costs nothing and pulls in no optional package."""
