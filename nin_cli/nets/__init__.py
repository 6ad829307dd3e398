"""Networks with NINs and what they are trained with: the NIN and the shipped networks
(models.py), a researcher's network with NINs as hooks (user_model.py), the one builder
(network.py), the CNN's fused first block (conv_block.py, conv_block.c), the noise (noise.py),
losses (objectives.py), optimizers (optimizers.py) and curvature (hessian.py)."""
