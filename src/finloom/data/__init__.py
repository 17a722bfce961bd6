"""The data pipeline: datatrove steps of our own and theirs, run by datatrove's executors."""
