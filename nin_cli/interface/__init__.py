"""What a user calls: `nin`'s parser (cli.py: it only parses and dispatches), each subcommand
(commands.py), shell completion (completion.py), the notebook API (api.py), and what every
launcher calls to run jobs (runner.py, ensemble_job.py, callbacks.py)."""
