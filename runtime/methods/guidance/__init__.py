"""Latent-space EBM guidance (paper Section 4.3): Langevin dynamics on a LatentCode, steered by energies of G(z)."""
