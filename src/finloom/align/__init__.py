"""Preference alignment: GRPO / PPO / DPO."""
