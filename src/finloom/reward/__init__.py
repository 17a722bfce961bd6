"""Reward models, judges and verifiable rewards."""
