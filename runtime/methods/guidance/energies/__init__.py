"""Energies E_i(x) of an image batch x (B, 3, H, W) in [-1, 1]; each a small class with a weight λ_i."""
from cyclediff.runtime.methods.guidance.energies.base import Energy, check_energies
from cyclediff.runtime.methods.guidance.energies.classifier import ClassifierEnergy
from cyclediff.runtime.methods.guidance.energies.clip import ClipEnergy
from cyclediff.runtime.methods.guidance.energies.identity import IdentityEnergy

KNOWN = (ClipEnergy, ClassifierEnergy, IdentityEnergy)

__all__ = ["KNOWN", "ClassifierEnergy", "ClipEnergy", "Energy", "IdentityEnergy", "check_energies"]
