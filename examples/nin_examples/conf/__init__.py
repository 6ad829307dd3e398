"""nin configs of the examples: on the search path as pkg://nin_examples.conf, or --config-dir examples/nin_examples/conf."""
