"""Grading shared by evaluation and rewards: answer extraction, the finance rubric, verifiable rewards."""
