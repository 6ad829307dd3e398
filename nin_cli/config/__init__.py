"""A command's config: YAML as OmegaConf reads and writes it, through libyaml (yaml_io.py), the
typed schema (schema.py), the config directories on Hydra's search path (sources.py), a run's
config resolved once (resolve.py), what older run directories meant (legacy.py), every job checked
before any trains (preflight.py), and what a SLURM cluster allows (cluster.py)."""
