"""Audio in: decoding any format to mono at a model's rate, windows, normalisation (a base layer that
datasets, models and features all use)."""
