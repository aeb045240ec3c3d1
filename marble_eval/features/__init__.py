"""Features stage: audio decoding, windows, extraction (single and distributed), the feature cache."""
