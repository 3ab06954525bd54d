"""CycleDiffusion: the DPM-Encoder (image -> LatentCode) and the DDIM decoder with recorded noises."""
