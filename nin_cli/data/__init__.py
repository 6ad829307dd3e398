"""The data a run trains and is evaluated on: datasets as device tensors (datasets.py), a
researcher's own .npz or factory (user_data.py), the corruptions and perturbations of a
robustness evaluation (corruptions.py, perturbations.py)."""
