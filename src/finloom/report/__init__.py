"""The run report: it reads every stage's manifest and artifacts, so it sits above the stages."""
