"""Dataset sources: one parser per benchmark family or file format."""
