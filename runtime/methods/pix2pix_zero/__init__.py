"""Pix2Pix-Zero (Parmar et al. 2023): regularized DDIM inversion, edit directions, cross-attention guidance."""
