"""Supervised fine-tuning: prompt system, SFT, packing, merging."""
