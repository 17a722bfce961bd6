"""PAS, the prompt augmentation system: complements written and critiqued, a model trained on them, served with
the main model (``finloom serve --pas``) and measured with vs without (``pas.evaluate``)."""
