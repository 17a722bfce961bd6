"""Continual pre-training: the general base (from-scratch models) and CPT on the finance mix."""
