"""archsweep: distributed sweeps for discrete-latent neural-architecture generation."""

__version__ = "0.1.0"
