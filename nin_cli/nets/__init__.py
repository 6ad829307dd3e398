"""Networks with NINs and what they are trained with: the NIN mechanism, one for every network
(nin.py), what a network's structure lets the engine accelerate (structure.py), nin's own networks
as factories (shipped.py), the one builder (network.py), the CNN's fused first block
(conv_block.py, conv_block.c), the noise (noise.py), losses (objectives.py), optimizers
(optimizers.py) and curvature (hessian.py)."""
