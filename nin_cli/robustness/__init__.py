"""Trained runs evaluated under noise, MNIST-C and attacks (evaluate.py), resumably."""
