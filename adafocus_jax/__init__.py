"""adafocus_jax: AdaFocus (Wang et al., ICCV 2021) in JAX/Flax.

A cheap glance network looks at every frame, a recurrent policy picks one informative patch
location, and an expensive local network looks only at the patches.
"""

__version__ = "0.1.0"
