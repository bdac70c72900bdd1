"""unpaired: unpaired image-to-image translation in JAX/Flax with PyTorch-reference parity."""

__version__ = "0.1.0"
